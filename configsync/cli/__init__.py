"""The `configsync` command (typer): `configsync --help` lists every command, and each has its
own `--help`. Operator commands (configsync.cli.operator) talk to the database; the others
(configsync.cli.people, configsync.cli.delivery) to a server."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from configsync.cli import delivery, operator, people  # noqa: F401  (they add their commands)
from configsync.cli.base import app
from configsync.errors import ConfigSyncError


def _version(shown: bool) -> None:
    if shown:
        import configsync

        print(f"configsync {configsync.__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    """ConfigSync: operator commands talk to the database (DATABASE_URL); the others to a
    server (CONFIGSYNC_URL) with a saved login, CONFIGSYNC_TOKEN or CONFIGSYNC_API_KEY."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; its exit code (1 with a message on stderr for what went wrong)."""
    import click

    command = typer.main.get_command(app)
    try:
        result = command.main(
            args=list(argv) if argv is not None else None,
            prog_name="configsync",
            standalone_mode=False,
        )
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        print("configsync: aborted", file=sys.stderr)
        return 1
    except ConfigSyncError as exc:
        print(f"configsync: {exc.detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # configsync.client (and httpx) load only for commands that talk to a server: a
        # ClientError can only come from there, and --help does not pay for the import.
        client = sys.modules.get("configsync.client")
        if client is None or not isinstance(exc, client.ClientError):
            raise
        said = exc.detail if exc.status == 0 else f"the server answered {exc}"
        print(f"configsync: {said}", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
