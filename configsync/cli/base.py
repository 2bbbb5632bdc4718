"""What every command shares: the Typer apps, the options they repeat, the server client and the
database sessions, output (rich tables, JSON, coloured changes).

Imports of anything heavy (httpx, SQLAlchemy, rich) happen inside the functions that need them,
so `configsync --help` starts in a fraction of a second.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from configsync.errors import InvalidInput

DEFAULT_URL = "http://127.0.0.1:8000"

app = typer.Typer(
    name="configsync",
    help=(
        "ConfigSync: operator commands talk to the database (DATABASE_URL); the others to a "
        "server (CONFIGSYNC_URL) with a saved login, CONFIGSYNC_TOKEN or CONFIGSYNC_API_KEY."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def group(name: str, help: str) -> typer.Typer:
    sub = typer.Typer(name=name, help=help, no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(sub)
    return sub


Environment = Annotated[str, typer.Option("-e", "--environment", help="the environment")]
Json = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
Service = Annotated[str, typer.Argument(help="the service")]


# --- a server --------------------------------------------------------------------------------


def client(**options: Any) -> Any:
    """A client of the server, with the caller's credentials: CONFIGSYNC_API_KEY (a service's
    key), CONFIGSYNC_TOKEN, or the login `configsync login` kept."""
    from configsync.client import Client, saved_login, server_url

    api_key = os.environ.get("CONFIGSYNC_API_KEY")
    token = os.environ.get("CONFIGSYNC_TOKEN")
    if not api_key and not token:
        saved = saved_login()
        if saved is None:
            raise InvalidInput(
                "not logged in: run `configsync login EMAIL`, or set CONFIGSYNC_TOKEN or "
                "CONFIGSYNC_API_KEY"
            )
        token = saved["access_token"]
    return Client(server_url(), token=token, api_key=api_key, **options)


# --- the database ----------------------------------------------------------------------------


def session_factory() -> Any:
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


def read_password(*, confirm: bool = True) -> str:
    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Again: ") != password:
            raise InvalidInput("the passwords differ")
        return password
    return sys.stdin.readline().rstrip("\r\n")


# --- output ----------------------------------------------------------------------------------


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    # On a terminal rich fits its width; piped, lines are kept whole rather than wrapped at 80.
    stream = sys.stderr if stderr else sys.stdout
    return Console(width=None if stream.isatty() else 200, stderr=stderr)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.table import Table

    shown = Table(title=title)
    for column in columns:
        shown.add_column(column)
    for row in rows:
        shown.add_row(*(str(cell) for cell in row))
    console().print(shown)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def shown(value: Any) -> str:
    """A value as the CLI prints it: a masked secret as *** and its fingerprint."""
    if isinstance(value, dict) and value.get("masked") is True:
        return "***destroyed" if value.get("destroyed") else f"***{value.get('fingerprint', '')}"
    return json.dumps(value, ensure_ascii=False)


def show_changes(title: str, answer: dict[str, Any], *, stderr: bool = False) -> None:
    from rich.markup import escape

    out = console(stderr)
    out.print(f"[bold]{title}[/bold]")
    symbols = {"add": ("+", "green"), "remove": ("-", "red"), "replace": ("~", "yellow")}
    for change in answer["changes"]:
        sign, colour = symbols[change["op"]]
        path = ".".join(change["path"]) or "(whole document)"
        if change["op"] == "replace":
            text = f"{path}: {shown(change['old'])} -> {shown(change['new'])}"
        elif change["op"] == "add":
            text = f"{path}: {shown(change['new'])}"
        else:
            text = f"{path}: {shown(change['old'])}"
        out.print(f"[{colour}]{sign} {escape(text)}[/{colour}]", highlight=False, markup=True)
    stats = answer["stats"]
    out.print(f"{stats['added']} added, {stats['changed']} changed, {stats['removed']} removed")
