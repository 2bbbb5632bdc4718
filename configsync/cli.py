"""The `configsync` command.

Operator commands talk to the database named by DATABASE_URL: migrate, serve, worker,
create-admin, projections, audit verify. Commands for people talk to a server (CONFIGSYNC_URL,
with the token `configsync login` keeps): history, diff, rollback, compare.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from configsync.client import DEFAULT_URL, ClientError
from configsync.errors import ConfigSyncError, InvalidInput

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except ConfigSyncError as exc:
        print(f"configsync: {exc.detail}", file=sys.stderr)
        return 1
    except ClientError as exc:
        print(f"configsync: the server answered {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="configsync", description=__doc__)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.set_defaults(handler=_migrate)

    serve = commands.add_parser("serve", help="serve the HTTP API (uvicorn, uvloop, httptools)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--reload", action="store_true", help="restart on code changes (development)"
    )
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(handler=_serve)

    admin = commands.add_parser(
        "create-admin",
        help="make an admin (or promote an existing account); password from the prompt or stdin",
    )
    admin.add_argument("email")
    admin.set_defaults(handler=_create_admin)

    backup = commands.add_parser(
        "backup", help="a consistent backup of the store to FILE (while the server runs)"
    )
    backup.add_argument("file")
    backup.set_defaults(handler=_backup)
    restore = commands.add_parser(
        "restore",
        help="restore FILE into an empty, migrated database: the chain is verified, "
        "projections rebuilt, a file that does not verify refused",
    )
    restore.add_argument("file")
    restore.set_defaults(handler=_restore)

    users = commands.add_parser("users", help="accounts (when sign-up is closed, admins make them)")
    users_commands = users.add_subparsers(title="user commands", metavar="ACTION")
    users_create = users_commands.add_parser(
        "create", help="create an account; password from the prompt or stdin"
    )
    users_create.add_argument("email")
    users_create.add_argument("--role", choices=["user", "auditor", "admin"], default="user")
    users_create.set_defaults(handler=_users_create)

    proj = commands.add_parser("projections", help="inspect and rebuild read models")
    proj_commands = proj.add_subparsers(title="projection commands", metavar="ACTION")
    rebuild = proj_commands.add_parser("rebuild", help="replay every event into a projection")
    rebuild.add_argument("name", choices=_projection_names())
    rebuild.set_defaults(handler=_projections_rebuild)
    verify = proj_commands.add_parser("verify", help="check `current` against a fresh fold")
    verify.set_defaults(handler=_projections_verify)
    status = proj_commands.add_parser("status", help="each projection's position and lag")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_projections_status)

    worker = commands.add_parser(
        "worker", help="run the Celery worker (with the periodic catch-up) that applies projections"
    )
    worker.add_argument("--concurrency", type=int, default=2)
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument(
        "--no-beat", action="store_true", help="leave the periodic catch-up to another worker"
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics (projection positions and lag) on this port",
    )
    worker.set_defaults(handler=_worker)

    # --- for people, against a server (CONFIGSYNC_URL) -------------------------------------
    login = commands.add_parser("login", help="log in to a server and keep the token (0600)")
    login.add_argument("email")
    login.add_argument("--url", help=f"the server (default: CONFIGSYNC_URL or {DEFAULT_URL})")
    login.set_defaults(handler=_login)

    history = commands.add_parser("history", help="a config's versions, newest first")
    history.add_argument("service")
    history.add_argument("-e", "--environment", default="default")
    history.add_argument("--limit", type=int, default=50)
    history.add_argument("--json", action="store_true")
    history.set_defaults(handler=_history)

    diff = commands.add_parser("diff", help="what changed between two versions (B: current)")
    diff.add_argument("service")
    diff.add_argument("a", type=int)
    diff.add_argument("b", type=int, nargs="?")
    diff.add_argument("-e", "--environment", default="default")
    diff.add_argument("--json", action="store_true")
    diff.set_defaults(handler=_diff)

    rollback = commands.add_parser("rollback", help="make a version's document current again")
    rollback.add_argument("service")
    rollback.add_argument("version", type=int)
    rollback.add_argument("--reason", required=True)
    rollback.add_argument("-e", "--environment", default="default")
    rollback.add_argument("--json", action="store_true")
    rollback.set_defaults(handler=_rollback)

    blame = commands.add_parser("blame", help="who last changed each key, when and why")
    blame.add_argument("service")
    blame.add_argument("-e", "--environment", default="default")
    blame.add_argument("--json", action="store_true")
    blame.set_defaults(handler=_blame)

    clients = commands.add_parser(
        "clients", help="read receipts: the version each API key last fetched, and who is behind"
    )
    clients.add_argument("service")
    clients.add_argument("-e", "--environment", default="default")
    clients.add_argument("--json", action="store_true")
    clients.set_defaults(handler=_clients)

    compare = commands.add_parser("compare", help="what differs between two environments")
    compare.add_argument("service")
    compare.add_argument("env_a")
    compare.add_argument("env_b")
    compare.add_argument("--json", action="store_true")
    compare.set_defaults(handler=_compare)

    tlog = commands.add_parser("log", help="the transparency log: key, checkpoints, verification")
    tlog_commands = tlog.add_subparsers(title="log commands", metavar="ACTION")
    tlog_key = tlog_commands.add_parser("key", help="print the log's verifier key (C2SP note form)")
    tlog_key.set_defaults(handler=_log_key)
    tlog_new = tlog_commands.add_parser(
        "new-key", help="print a new signing key for CONFIGSYNC_LOG_SIGNING_KEY"
    )
    tlog_new.set_defaults(handler=_log_new_key)
    tlog_sign = tlog_commands.add_parser("checkpoint", help="sign a checkpoint of the log now")
    tlog_sign.set_defaults(handler=_log_checkpoint)
    tlog_verify = tlog_commands.add_parser(
        "verify",
        help="check kept checkpoints against the log, trusting only configsync.logverify",
    )
    tlog_verify.add_argument("--key", required=True, help="the verifier key, or a file holding it")
    tlog_verify.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        help="a file of one or more signed checkpoints (repeat for more files)",
    )
    tlog_verify.add_argument("--origin", help="the log's name the checkpoints must carry")
    source = tlog_verify.add_mutually_exclusive_group(required=True)
    source.add_argument("--events", help="an export of the log: GET /v1/events?format=jsonl")
    source.add_argument("--url", help="a server to export the log from (a saved login)")
    tlog_verify.set_defaults(handler=_log_verify)

    keys = commands.add_parser("keys", help="the master keys that wrap the keys of secrets")
    keys_commands = keys.add_subparsers(title="key commands", metavar="ACTION")
    keys_new = keys_commands.add_parser(
        "new-master", help="print a new master key for CONFIGSYNC_MASTER_KEYS"
    )
    keys_new.set_defaults(handler=_keys_new_master)
    keys_rotate = keys_commands.add_parser(
        "rotate",
        help="re-wrap every data key under the newest master key (the first listed); "
        "events are not touched",
    )
    keys_rotate.set_defaults(handler=_keys_rotate)

    secrets = commands.add_parser("secrets", help="secret values: declare, destroy")
    secrets_commands = secrets.add_subparsers(title="secrets commands", metavar="ACTION")
    declare = secrets_commands.add_parser(
        "declare", help="set the key paths a service declares secret (the whole list)"
    )
    declare.add_argument("service")
    declare.add_argument("paths", nargs="*", help="key paths such as database.password")
    declare.add_argument("--json", action="store_true")
    declare.set_defaults(handler=_secrets_declare)
    destroy = secrets_commands.add_parser(
        "destroy",
        help="crypto-shred the secret values of versions up to N for ever "
        "(the current values are sealed afresh first)",
    )
    destroy.add_argument("service")
    destroy.add_argument("--up-to", type=int, required=True, metavar="VERSION")
    destroy.add_argument("--reason", required=True)
    destroy.add_argument("-e", "--environment", default="default")
    destroy.add_argument("--json", action="store_true")
    destroy.set_defaults(handler=_secrets_destroy)

    audit = commands.add_parser("audit", help="the tamper-evident log")
    audit_commands = audit.add_subparsers(title="audit commands", metavar="ACTION")
    audit_verify = audit_commands.add_parser("verify", help="walk and check the hash chain")
    audit_verify.set_defaults(handler=_audit_verify)
    return parser


def _projection_names() -> list[str]:
    from projections.registry import NAMES

    return list(NAMES)


def _client() -> Any:
    from configsync.client import Client, saved_login, server_url

    saved = saved_login()
    if saved is None:
        raise InvalidInput("not logged in: run `configsync login EMAIL` first")
    return Client(server_url(), token=saved["access_token"])


def _login(args: argparse.Namespace) -> int:
    import os

    from configsync.client import Client, save_login, server_url

    url = args.url or os.environ.get("CONFIGSYNC_URL") or server_url()
    password = _read_password(confirm=False)
    token = Client(url).login(args.email, password)["access_token"]
    path = save_login(url, args.email, token)
    print(f"logged in to {url} as {args.email} (token kept in {path})")
    return 0


def _history(args: argparse.Namespace) -> int:
    page = _client().history(args.service, args.environment, limit=args.limit)
    if args.json:
        _print_json(page)
        return 0
    from rich.table import Table

    table = Table(title=f"{args.service}/{args.environment}")
    for column in ("version", "recorded at", "actor", "action", "summary", "reason"):
        table.add_column(column)
    for item in page["items"]:
        action = item["action"] + (f" to v{item['rollback_of']}" if item.get("rollback_of") else "")
        table.add_row(
            str(item["version"]),
            item["recorded_at"],
            (item.get("actor") or {}).get("name", ""),
            action,
            item["summary"],
            item.get("reason") or "",
        )
    _console().print(table)
    return 0


def _blame(args: argparse.Namespace) -> int:
    answer = _client().blame(args.service, args.environment)
    if args.json:
        _print_json(answer)
        return 0
    from rich.table import Table

    table = Table(title=f"{args.service}/{args.environment}")
    for column in ("key", "version", "recorded at", "actor", "action", "reason"):
        table.add_column(column)
    for item in answer["keys"]:
        table.add_row(
            ".".join(item["path"]),
            str(item["version"]),
            item["recorded_at"],
            (item.get("actor") or {}).get("name", ""),
            item["action"],
            item.get("reason") or "",
        )
    _console().print(table)
    return 0


def _clients(args: argparse.Namespace) -> int:
    answer = _client().clients(args.service, args.environment)
    if args.json:
        _print_json(answer)
        return 0
    from rich.table import Table

    table = Table(title=f"{args.service}/{args.environment}: version {answer['version']}")
    for column in ("key", "prefix", "version read", "when", ""):
        table.add_column(column)
    for item in answer["clients"]:
        read = "never" if item["version"] is None else str(item["version"])
        mark = "[red]behind[/red]" if item["behind"] else "[green]current[/green]"
        table.add_row(item["name"], item["prefix"], read, item["read_at"] or "", mark)
    _console().print(table)
    return 0


def _show_changes(title: str, answer: dict[str, Any]) -> None:
    console = _console()
    console.print(f"[bold]{title}[/bold]")
    symbols = {"add": ("+", "green"), "remove": ("-", "red"), "replace": ("~", "yellow")}
    for change in answer["changes"]:
        sign, colour = symbols[change["op"]]
        path = ".".join(change["path"]) or "(whole document)"
        if change["op"] == "replace":
            text = f"{path}: {_shown(change['old'])} -> {_shown(change['new'])}"
        elif change["op"] == "add":
            text = f"{path}: {_shown(change['new'])}"
        else:
            text = f"{path}: {_shown(change['old'])}"
        console.print(f"[{colour}]{sign} {text}[/{colour}]", highlight=False, markup=True)
    stats = answer["stats"]
    console.print(f"{stats['added']} added, {stats['changed']} changed, {stats['removed']} removed")


def _diff(args: argparse.Namespace) -> int:
    answer = _client().diff(args.service, args.environment, args.a, args.b)
    if args.json:
        _print_json(answer)
    else:
        _show_changes(
            f"{args.service}/{args.environment}: v{answer['from']} -> v{answer['to']}", answer
        )
    return 0


def _rollback(args: argparse.Namespace) -> int:
    answer = _client().rollback(args.service, args.environment, args.version, args.reason)
    if args.json:
        _print_json(answer)
    elif answer["changed"]:
        print(
            f"{args.service}/{args.environment} is now version {answer['version']} "
            f"(the document of version {args.version})"
        )
    else:
        print(answer.get("message", "nothing changed"))
    return 0


def _compare(args: argparse.Namespace) -> int:
    answer = _client().compare(args.service, args.env_a, args.env_b)
    if args.json:
        _print_json(answer)
    else:
        _show_changes(
            f"{args.service}: {args.env_a} (v{answer['from_version']}) -> "
            f"{args.env_b} (v{answer['to_version']})",
            answer,
        )
    return 0


def _keys_new_master(_args: argparse.Namespace) -> int:
    from configsync.secrets.crypto import new_master_key

    print(new_master_key())
    return 0


def _keys_rotate(_args: argparse.Namespace) -> int:
    from configsync.db import unit_of_work
    from configsync.secrets.crypto import MasterKeys
    from configsync.secrets.vault import Vault
    from configsync.settings import get_settings

    vault = Vault(MasterKeys.parse(get_settings().master_key_text()))
    with unit_of_work(_session_factory()) as session:
        rewrapped = vault.rotate(session)
    print(
        f"re-wrapped {rewrapped} key(s) under master key {vault.master.newest_id}; "
        "older master keys can now be removed from CONFIGSYNC_MASTER_KEYS"
    )
    return 0


def _secrets_declare(args: argparse.Namespace) -> int:
    answer = _client().declare_secrets(args.service, args.paths)
    if args.json:
        _print_json(answer)
        return 0
    print(f"{args.service}: declared secret: {', '.join(answer['paths']) or '(none)'}")
    print(f"  and every key matching {', '.join(answer['patterns'])}")
    for path, count in answer["plaintext_versions"].items():
        if count:
            print(f"  {path}: {count} earlier version(s) hold it in plain text")
    return 0


def _secrets_destroy(args: argparse.Namespace) -> int:
    answer = _client().destroy_secrets(args.service, args.environment, args.up_to, args.reason)
    if args.json:
        _print_json(answer)
    elif answer["changed"]:
        print(
            f"{args.service}/{args.environment}: destroyed {len(answer['destroyed_keys'])} data "
            f"key(s); secret values of versions 1..{answer['unreadable_through_version']} can no "
            f"longer be read; version {answer['version']} records it"
        )
    else:
        print(f"{args.service}/{args.environment}: nothing sealed in those versions to destroy")
    return 0


def _shown(value: Any) -> str:
    """A value as the CLI prints it: a masked secret as *** and its fingerprint."""
    if isinstance(value, dict) and value.get("masked") is True:
        return "***destroyed" if value.get("destroyed") else f"***{value.get('fingerprint', '')}"
    return json.dumps(value, ensure_ascii=False)


def _console() -> Any:
    from rich.console import Console

    # On a terminal rich fits its width; piped, lines are kept whole rather than wrapped at 80.
    return Console(width=None if sys.stdout.isatty() else 200)


def _session_factory() -> Any:
    """Sessions of the configured database, which must exist: a command run in the wrong
    folder must not quietly make an empty `configsync.db` there and report on it."""
    from configsync.db import make_engine, make_session_factory
    from configsync.settings import get_settings, sqlite_path

    url = get_settings().database_url
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is not None and not path.exists():
            raise InvalidInput(
                f"no database at {path}: run `configsync migrate` there first, run this where "
                "the database is, or set DATABASE_URL"
            )
    return make_session_factory(make_engine(url))


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _migrate(_args: argparse.Namespace) -> int:
    from configsync.migrations import upgrade
    from configsync.settings import get_settings

    upgrade(get_settings().database_url)
    print("database is up to date")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from configsync import logs
    from configsync.settings import get_settings

    settings = get_settings()  # fail here, with the message, rather than in every worker
    settings.signing_key()
    logs.configure(settings.log_level, settings.log_format)
    if args.workers > 1 and not args.reload:
        _metrics_across_workers()
    uvicorn.run(
        "configsync.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        reload=args.reload,
        workers=None if args.reload else args.workers,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level.lower(),
        log_config=None,  # configsync.logs: JSON lines, and its own request log
        access_log=False,
    )
    return 0


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


def _read_password(*, confirm: bool = True) -> str:
    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Again: ") != password:
            raise InvalidInput("the passwords differ")
        return password
    return sys.stdin.readline().rstrip("\r\n")


def _create_admin(args: argparse.Namespace) -> int:
    from configsync.auth.service import create_admin
    from configsync.db import unit_of_work

    password = _read_password()
    with unit_of_work(_session_factory()) as session:
        user, created = create_admin(session, args.email, password)
        email = user.email
    print(f"{'created' if created else 'promoted'} admin {email}")
    return 0


def _backup(args: argparse.Namespace) -> int:
    from pathlib import Path

    from configsync.backup import backup

    events = backup(_session_factory(), Path(args.file))
    print(
        f"backed up {events} events (and the people, services, keys and checkpoints) to {args.file}"
    )
    return 0


def _restore(args: argparse.Namespace) -> int:
    from pathlib import Path

    from configsync.backup import restore

    events = restore(_session_factory(), Path(args.file))
    print(f"restored {events} events; the chain verifies; every projection rebuilt")
    return 0


def _users_create(args: argparse.Namespace) -> int:
    from configsync.auth.service import signup
    from configsync.db import unit_of_work

    password = _read_password()
    with unit_of_work(_session_factory()) as session:
        user = signup(session, args.email, password, role=args.role)
        email, role = user.email, user.role
    print(f"created {role} {email}")
    return 0


def _projections_rebuild(args: argparse.Namespace) -> int:
    from projections.registry import rebuild_one

    replayed = rebuild_one(_session_factory(), args.name)
    print(f"rebuilt {args.name} from {replayed} events")
    return 0


def _projections_status(args: argparse.Namespace) -> int:
    from projections.registry import status_all

    session = _session_factory()()
    try:
        rows = status_all(session)
    finally:
        session.close()
    table = [{"name": r.name, "position": r.position, "lag": r.lag} for r in rows]
    if args.json:
        _print_json({"last_position": rows[0].last_position, "projections": table})
    else:
        print(f"last event position: {rows[0].last_position}")
        for row in table:
            print(f"  {row['name']:10s} position {row['position']:>10}   lag {row['lag']}")
    return 0


def _worker(args: argparse.Namespace) -> int:
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
    app = configure(settings)
    _worker_logs(args.loglevel, settings.log_format)
    if args.metrics_port:
        from configsync.metrics import serve_worker_metrics
        from projections.registry import status_all

        factory = _session_factory()

        def status() -> list[Any]:
            with factory() as session:
                return status_all(session)

        serve_worker_metrics(args.metrics_port, status)
    argv = [
        "worker",
        f"--concurrency={args.concurrency}",
        "--pool=prefork",
        f"--loglevel={args.loglevel}",
        f"--queues={QUEUE}",
    ]
    if not args.no_beat:
        schedule = f"{tempfile.gettempdir()}/configsync-beat-{os.getpid()}"
        argv += ["--beat", f"--schedule={schedule}"]
    app.worker_main(argv)
    return 0


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


def _projections_verify(_args: argparse.Namespace) -> int:
    from projections import current

    session = _session_factory()()
    try:
        mismatches = current.verify(session)
    finally:
        session.close()
    if mismatches:
        for mismatch in mismatches:
            print(f"MISMATCH {mismatch.stream}: {mismatch.reason}")
        return 1
    print("current matches the events")
    return 0


def _audit_verify(_args: argparse.Namespace) -> int:
    from configsync.events import verify_chain
    from projections.audit import first_mismatch

    session = _session_factory()()
    try:
        report = verify_chain(session)
        audit_mismatch = first_mismatch(session)
    finally:
        session.close()
    _print_json(
        {
            "ok": report.ok and audit_mismatch is None,
            "checked": report.checked,
            "first_bad_position": report.first_bad_position,
            "first_bad_audit_row": audit_mismatch,
        }
    )
    return 0 if report.ok and audit_mismatch is None else 1


def _log_new_key(_args: argparse.Namespace) -> int:
    from configsync.settings import new_log_key

    print(new_log_key())
    return 0


def _log_key(_args: argparse.Namespace) -> int:
    from configsync.audit.log import LogSigner
    from configsync.settings import get_settings

    print(LogSigner.from_settings(get_settings()).verifier_key())
    return 0


def _log_checkpoint(_args: argparse.Namespace) -> int:
    from configsync.settings import get_settings
    from configsync.tasks import sign_due_checkpoint

    settings = get_settings().model_copy(update={"checkpoint_interval_seconds": 0})
    sign_due_checkpoint(_session_factory(), settings)
    from configsync.audit.log import latest

    with _session_factory()() as session:
        signed = latest(session)
    if signed is None:
        print("the log is empty: there is nothing to sign")
        return 1
    print(signed.note, end="")
    return 0


def _log_verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from configsync import logverify

    key_text = Path(args.key).read_text() if Path(args.key).is_file() else args.key
    try:
        key = logverify.parse_verifier_key(key_text)
        checkpoints = [
            logverify.parse_checkpoint(note, key, args.origin)
            for path in args.checkpoint
            for note in logverify.split_notes(Path(path).read_text(encoding="utf-8"))
        ]
        if args.events:
            with open(args.events, encoding="utf-8") as handle:
                events = [json.loads(line) for line in handle if line.strip()]
        else:
            events = _export_events(args.url)
            current = _server_checkpoint(args.url, key, args.origin, logverify)
            if current is not None:
                _check_consistency(args.url, checkpoints, current, logverify)
                checkpoints.append(current)
        print(logverify.verify_log(checkpoints, logverify.leaves_of(events)))
    except logverify.VerificationError as exc:
        print(f"configsync: log verification FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


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
    import os

    import httpx

    from configsync.client import saved_login

    token = os.environ.get("CONFIGSYNC_TOKEN") or (saved_login() or {}).get("access_token")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for old in kept:
        if old.size > current.size:
            raise logverify.VerificationError(
                f"truncated: the server's checkpoint is of size {current.size}, below {old.size}"
            )
        answer = httpx.get(
            url.rstrip("/") + "/v1/log/proof/consistency",
            params={"from": old.size, "to": current.size},
            headers=headers,
            timeout=30,
        ).json()
        path = [base64.b64decode(h) for h in answer.get("consistency_path", [])]
        logverify.verify_consistency(old.size, current.size, old.root, current.root, path)


def _export_events(url: str) -> list[dict[str, Any]]:
    import os

    import httpx

    from configsync.client import saved_login

    token = os.environ.get("CONFIGSYNC_TOKEN") or (saved_login() or {}).get("access_token")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(url.rstrip("/") + "/v1/events?format=jsonl", headers=headers, timeout=300)
    if response.status_code != 200:
        raise InvalidInput(f"the server answered {response.status_code}: {response.text[:200]}")
    events = [json.loads(line) for line in response.text.splitlines() if line]
    if len(events) != int(response.headers.get("x-export-rows", len(events))):
        raise InvalidInput("the export was cut short; try again")
    return events


if __name__ == "__main__":
    raise SystemExit(main())
