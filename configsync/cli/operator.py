"""Operator commands: they talk to the database named by DATABASE_URL (migrate, serve, worker,
accounts, backups, projections, the audit chain, the transparency log, master keys)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from configsync.cli.base import Json, app, group, print_json, read_password, session_factory
from configsync.errors import InvalidInput

users = group("users", "accounts (when sign-up is closed, admins make them)")
projections = group("projections", "inspect and rebuild read models")
audit = group("audit", "the tamper-evident log")
tlog = group("log", "the transparency log: key, checkpoints, verification")
keys = group("keys", "the master keys that wrap the keys of secrets")


@app.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from configsync.migrations import upgrade
    from configsync.settings import get_settings

    upgrade(get_settings().database_url)
    print("database is up to date")


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    reload: Annotated[bool, typer.Option(help="restart on code changes (development)")] = False,
    workers: int = 1,
) -> None:
    """Serve the HTTP API (uvicorn, uvloop, httptools)."""
    import uvicorn

    from configsync import logs
    from configsync.serving import CoalescingHttpToolsProtocol
    from configsync.settings import get_settings

    settings = get_settings()  # fail here, with the message, rather than in every worker
    settings.signing_key()
    logs.configure(settings.log_level, settings.log_format)
    if workers > 1 and not reload:
        _metrics_across_workers()
    uvicorn.run(
        "configsync.app:create_app",
        factory=True,
        host=host,
        port=port,
        reload=reload,
        workers=None if reload else workers,
        loop="uvloop",
        http=CoalescingHttpToolsProtocol,  # httptools, a response sent in one write
        log_level=settings.log_level.lower(),
        log_config=None,  # configsync.logs: JSON lines, and its own request log
        access_log=False,
    )


def _metrics_across_workers() -> None:
    """Every worker writes its metric samples to one directory, so a scrape of any worker
    reports them all (prometheus_client's multiprocess mode). Emptied at start: samples of a
    previous run are not this one's."""
    import atexit
    import os
    import shutil
    import tempfile

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)
    else:
        directory = tempfile.mkdtemp(prefix="configsync-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        atexit.register(shutil.rmtree, directory, True)


@app.command()
def worker(
    concurrency: int = 2,
    loglevel: str = "INFO",
    no_beat: Annotated[
        bool, typer.Option("--no-beat", help="leave the periodic catch-up to another worker")
    ] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="serve Prometheus metrics (projection positions and lag) on this port"),
    ] = None,
) -> None:
    """Run the Celery worker (with the periodic catch-up) that applies projections."""
    import os
    import tempfile

    from configsync.settings import get_settings
    from configsync.tasks import QUEUE, configure

    settings = get_settings()
    if not settings.redis_url:
        raise InvalidInput(
            "configsync worker needs REDIS_URL; without it (embedded mode) the projections run "
            "inside the API process after every write"
        )
    celery = configure(settings)
    _worker_logs(loglevel, settings.log_format)
    if metrics_port:
        from configsync.metrics import serve_worker_metrics
        from projections.registry import status_all

        factory = session_factory()

        def status() -> list[Any]:
            with factory() as session:
                return status_all(session)

        serve_worker_metrics(metrics_port, status)
    argv = [
        "worker",
        f"--concurrency={concurrency}",
        "--pool=prefork",
        f"--loglevel={loglevel}",
        f"--queues={QUEUE}",
    ]
    if not no_beat:
        schedule = f"{tempfile.gettempdir()}/configsync-beat-{os.getpid()}"
        argv += ["--beat", f"--schedule={schedule}"]
    celery.worker_main(argv)


def _worker_logs(level: str, fmt: str) -> None:
    """Celery leaves logging to configsync.logs (its setup_logging signal has a receiver):
    JSON lines or text at the worker's --loglevel, its per-task lines at DEBUG only. Set up
    before Celery starts, so its start-up warnings are lines like the others."""
    import logging

    from celery.signals import setup_logging

    from configsync import logs

    logs.configure(level, fmt)

    @setup_logging.connect(weak=False)
    def _configure(loglevel: Any = "INFO", **_: Any) -> None:
        level = loglevel if isinstance(loglevel, str) else logging.getLevelName(loglevel)
        logs.configure(level, fmt)


@app.command("create-admin")
def create_admin(email: str) -> None:
    """Make an admin (or promote an existing account); password from the prompt or stdin."""
    from configsync.auth.service import create_admin as make
    from configsync.db import unit_of_work

    password = read_password()
    with unit_of_work(session_factory()) as session:
        user, created = make(session, email, password)
        shown = user.email
    print(f"{'created' if created else 'promoted'} admin {shown}")


@app.command()
def backup(file: Path) -> None:
    """A consistent backup of the store to FILE (while the server runs)."""
    from configsync.backup import backup as take

    events = take(session_factory(), file)
    print(f"backed up {events} events (and the people, services, keys and checkpoints) to {file}")


@app.command()
def restore(file: Path) -> None:
    """Restore FILE into an empty, migrated database: the chain is verified, projections
    rebuilt, a file that does not verify refused."""
    from configsync.backup import restore as put_back

    events = put_back(session_factory(), file)
    print(f"restored {events} events; the chain verifies; every projection rebuilt")


@users.command("create")
def users_create(
    email: str,
    role: Annotated[str, typer.Option(help="user, auditor or admin")] = "user",
) -> None:
    """Create an account; password from the prompt or stdin."""
    from configsync.auth.service import signup
    from configsync.db import unit_of_work

    if role not in ("user", "auditor", "admin"):
        raise InvalidInput(f"--role must be user, auditor or admin, not {role!r}")
    password = read_password()
    with unit_of_work(session_factory()) as session:
        user = signup(session, email, password, role=role)
        made, kind = user.email, user.role
    print(f"created {kind} {made}")


@projections.command("rebuild")
def projections_rebuild(
    name: Annotated[str, typer.Argument(help="current, snapshots or audit")],
) -> None:
    """Replay every event into a projection."""
    from projections.registry import NAMES, rebuild_one

    if name not in NAMES:
        raise InvalidInput(f"no projection {name!r}: one of {', '.join(NAMES)}")
    replayed = rebuild_one(session_factory(), name)
    print(f"rebuilt {name} from {replayed} events")


@projections.command("verify")
def projections_verify() -> None:
    """Check `current` against a fresh fold of the events."""
    from projections import current

    with session_factory()() as session:
        mismatches = current.verify(session)
    if mismatches:
        for mismatch in mismatches:
            print(f"MISMATCH {mismatch.stream}: {mismatch.reason}")
        raise typer.Exit(1)
    print("current matches the events")


@projections.command("status")
def projections_status(json_out: Json = False) -> None:
    """Each projection's position and lag."""
    from projections.registry import status_all

    with session_factory()() as session:
        rows = status_all(session)
    found = [{"name": r.name, "position": r.position, "lag": r.lag} for r in rows]
    if json_out:
        print_json({"last_position": rows[0].last_position, "projections": found})
        return
    print(f"last event position: {rows[0].last_position}")
    for row in found:
        print(f"  {row['name']:10s} position {row['position']:>10}   lag {row['lag']}")


@audit.command("verify")
def audit_verify() -> None:
    """Walk and check the hash chain (and the audit table against it)."""
    from configsync.events import verify_chain
    from projections.audit import first_mismatch

    with session_factory()() as session:
        report = verify_chain(session)
        audit_mismatch = first_mismatch(session)
    ok = report.ok and audit_mismatch is None
    print_json(
        {
            "ok": ok,
            "checked": report.checked,
            "first_bad_position": report.first_bad_position,
            "first_bad_audit_row": audit_mismatch,
        }
    )
    if not ok:
        raise typer.Exit(1)


@tlog.command("key")
def log_key() -> None:
    """Print the log's verifier key (C2SP note form)."""
    from configsync.audit.log import LogSigner
    from configsync.settings import get_settings

    print(LogSigner.from_settings(get_settings()).verifier_key())


@tlog.command("new-key")
def log_new_key() -> None:
    """Print a new signing key for CONFIGSYNC_LOG_SIGNING_KEY."""
    from configsync.settings import new_log_key

    print(new_log_key())


@tlog.command("checkpoint")
def log_checkpoint() -> None:
    """Sign a checkpoint of the log now."""
    from configsync.audit.log import latest
    from configsync.settings import get_settings
    from configsync.tasks import sign_due_checkpoint

    settings = get_settings().model_copy(update={"checkpoint_interval_seconds": 0})
    sign_due_checkpoint(session_factory(), settings)
    with session_factory()() as session:
        signed = latest(session)
    if signed is None:
        print("the log is empty: there is nothing to sign")
        raise typer.Exit(1)
    print(signed.note, end="")


@tlog.command("verify")
def log_verify(
    key: Annotated[str, typer.Option(help="the verifier key, or a file holding it")],
    checkpoint: Annotated[
        list[str],
        typer.Option(help="a file of one or more signed checkpoints (repeat for more files)"),
    ],
    origin: Annotated[
        str | None, typer.Option(help="the log's name the checkpoints must carry")
    ] = None,
    events: Annotated[
        str | None, typer.Option(help="an export of the log: GET /v1/events?format=jsonl")
    ] = None,
    url: Annotated[str | None, typer.Option(help="a server to export the log from")] = None,
) -> None:
    """Check kept checkpoints against the log, trusting only configsync.logverify."""
    from configsync import logverify

    if (events is None) == (url is None):
        raise InvalidInput("give exactly one of --events FILE and --url SERVER")
    key_text = Path(key).read_text() if Path(key).is_file() else key
    try:
        verifier = logverify.parse_verifier_key(key_text)
        kept = [
            logverify.parse_checkpoint(note, verifier, origin)
            for path in checkpoint
            for note in logverify.split_notes(Path(path).read_text(encoding="utf-8"))
        ]
        if events is not None:
            with open(events, encoding="utf-8") as handle:
                leaves = [json.loads(line) for line in handle if line.strip()]
        else:
            assert url is not None
            leaves = _export_events(url)
            current = _server_checkpoint(url, verifier, origin, logverify)
            if current is not None:
                _check_consistency(url, kept, current, logverify)
                kept.append(current)
        print(logverify.verify_log(kept, logverify.leaves_of(leaves)))
    except logverify.VerificationError as exc:
        print(f"configsync: log verification FAILED: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None


def _auth_headers() -> dict[str, str]:
    import os

    from configsync.client import saved_login

    token = os.environ.get("CONFIGSYNC_TOKEN") or (saved_login() or {}).get("access_token")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _server_checkpoint(url: str, key: Any, origin: str | None, logverify: Any) -> Any:
    """The server's latest checkpoint, its signature checked; None if it has signed none."""
    import httpx

    response = httpx.get(url.rstrip("/") + "/v1/log/checkpoint", timeout=30)
    if response.status_code == 404:
        return None
    return logverify.parse_checkpoint(response.text, key, origin)


def _check_consistency(url: str, kept: list[Any], current: Any, logverify: Any) -> None:
    """RFC 9162 consistency proofs, from the server, that its current tree extends each kept
    checkpoint: checked here, not believed."""
    import base64

    import httpx

    for old in kept:
        if old.size > current.size:
            raise logverify.VerificationError(
                f"truncated: the server's checkpoint is of size {current.size}, below {old.size}"
            )
        answer = httpx.get(
            url.rstrip("/") + "/v1/log/proof/consistency",
            params={"from": old.size, "to": current.size},
            headers=_auth_headers(),
            timeout=30,
        ).json()
        path = [base64.b64decode(h) for h in answer.get("consistency_path", [])]
        logverify.verify_consistency(old.size, current.size, old.root, current.root, path)


def _export_events(url: str) -> list[dict[str, Any]]:
    import httpx

    response = httpx.get(
        url.rstrip("/") + "/v1/events?format=jsonl", headers=_auth_headers(), timeout=300
    )
    if response.status_code != 200:
        raise InvalidInput(f"the server answered {response.status_code}: {response.text[:200]}")
    events = [json.loads(line) for line in response.text.splitlines() if line]
    if len(events) != int(response.headers.get("x-export-rows", len(events))):
        raise InvalidInput("the export was cut short; try again")
    return events


@keys.command("new-master")
def keys_new_master() -> None:
    """Print a new master key for CONFIGSYNC_MASTER_KEYS."""
    from configsync.secrets.crypto import new_master_key

    print(new_master_key())


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-wrap every data key under the newest master key (the first listed); events are not
    touched."""
    from configsync.db import unit_of_work
    from configsync.secrets.crypto import MasterKeys
    from configsync.secrets.vault import Vault
    from configsync.settings import get_settings

    vault = Vault(MasterKeys.parse(get_settings().master_key_text()))
    with unit_of_work(session_factory()) as session:
        rewrapped = vault.rotate(session)
    print(
        f"re-wrapped {rewrapped} key(s) under master key {vault.master.newest_id}; "
        "older master keys can now be removed from CONFIGSYNC_MASTER_KEYS"
    )
