"""The `configsync` command: operate a ConfigSync installation.

Operator commands talk to the database named by DATABASE_URL: migrate, serve, create-admin,
projections, audit verify.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

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

    proj = commands.add_parser("projections", help="inspect and rebuild read models")
    proj_commands = proj.add_subparsers(title="projection commands", metavar="ACTION")
    rebuild = proj_commands.add_parser("rebuild", help="replay every event into a projection")
    rebuild.add_argument("name", choices=["current", "snapshots", "audit"])
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
    worker.set_defaults(handler=_worker)

    audit = commands.add_parser("audit", help="the tamper-evident log")
    audit_commands = audit.add_subparsers(title="audit commands", metavar="ACTION")
    audit_verify = audit_commands.add_parser("verify", help="walk and check the hash chain")
    audit_verify.set_defaults(handler=_audit_verify)
    return parser


def _session_factory() -> Any:
    from configsync.db import make_engine, make_session_factory
    from configsync.settings import get_settings

    return make_session_factory(make_engine(get_settings().database_url))


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

    from configsync.settings import get_settings

    settings = get_settings()  # fail here, with the message, rather than in every worker
    settings.signing_key()
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
        access_log=False,
    )
    return 0


def _read_password() -> str:
    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
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


def _projections_rebuild(args: argparse.Namespace) -> int:
    from configsync.db import unit_of_work
    from projections import current, snapshots

    with unit_of_work(_session_factory()) as session:
        if args.name == "current":
            replayed = current.rebuild(session)
            print(f"rebuilt current from {replayed} events")
        elif args.name == "snapshots":
            written = snapshots.rebuild(session)
            print(f"rebuilt snapshots: {written} written")
    if args.name == "audit":
        from projections.audit import AuditProjection
        from projections.base import rebuild

        replayed = rebuild(_session_factory(), AuditProjection())
        print(f"rebuilt audit from {replayed} events")
    return 0


def _projections_status(args: argparse.Namespace) -> int:
    from configsync.events import last_position
    from projections import current
    from projections.audit import NAME as AUDIT
    from projections.base import status

    session = _session_factory()()
    try:
        last = last_position(session)
        rows = [("current", current.position(session))]
        rows += [(s.name, s.position) for s in status(session, [AUDIT])]
    finally:
        session.close()
    table = [{"name": n, "position": p, "lag": last - p} for n, p in rows]
    if args.json:
        _print_json({"last_position": last, "projections": table})
    else:
        print(f"last event position: {last}")
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

    session = _session_factory()()
    try:
        report = verify_chain(session)
    finally:
        session.close()
    _print_json(
        {
            "ok": report.ok,
            "checked": report.checked,
            "first_bad_position": report.first_bad_position,
        }
    )
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
