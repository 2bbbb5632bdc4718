"""Commands for people, against a server: log in and out, read the history of a config, diff,
roll back, compare environments, see who is behind, declare and destroy secrets."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from configsync.cli.base import (
    DEFAULT_URL,
    Environment,
    Json,
    Service,
    app,
    client,
    group,
    print_json,
    read_password,
    show_changes,
    table,
)

secrets = group("secrets", "secret values: declare, destroy")


@app.command()
def login(
    email: str,
    url: Annotated[
        str | None, typer.Option(help=f"the server (default: CONFIGSYNC_URL or {DEFAULT_URL})")
    ] = None,
) -> None:
    """Log in to a server and keep the token (0600); the password from the prompt or stdin."""
    from configsync.client import Client, save_login, server_url

    url = url or os.environ.get("CONFIGSYNC_URL") or server_url()
    password = read_password(confirm=False)
    with Client(url, cache=False) as anonymous:
        token = anonymous.login(email, password)["access_token"]
    path = save_login(url, email, token)
    print(f"logged in to {url} as {email} (token kept in {path})")


@app.command()
def logout() -> None:
    """Revoke the saved token on the server and forget it here."""
    from configsync.client import ClientError, credentials_file, saved_login

    saved = saved_login()
    if saved is None:
        print("not logged in")
        return
    try:
        with client(cache=False) as server:
            server.logout()
    except ClientError as exc:  # expired or revoked already: forgetting it is what is left
        print(f"the server did not revoke it ({exc}); forgetting it here")
    credentials_file().unlink(missing_ok=True)
    print(f"logged out of {saved.get('url')}")


@app.command()
def whoami(json_out: Json = False) -> None:
    """Who the server takes you for: the person logged in, or the API key in use."""
    with client(cache=False) as server:
        me = server.me()
    if json_out:
        print_json(me)
    elif me["kind"] == "user":
        print(f"{me['email']} ({me['role']}) at {server.url}")
    else:
        where = f"{me['service']}/{me['environment'] or '*'}"
        print(f"API key {me['name']} ({me['permission']} on {where}) at {server.url}")


@app.command()
def history(
    service: Service, environment: Environment = "default", limit: int = 50, json_out: Json = False
) -> None:
    """A config's versions, newest first."""
    page = client().history(service, environment, limit=limit)
    if json_out:
        print_json(page)
        return
    rows = []
    for item in page["items"]:
        action = item["action"] + (f" to v{item['rollback_of']}" if item.get("rollback_of") else "")
        who = (item.get("actor") or {}).get("name", "")
        rows.append(
            (
                str(item["version"]),
                item["recorded_at"],
                who,
                action,
                item["summary"],
                item.get("reason") or "",
            )
        )
    table(
        f"{service}/{environment}",
        ("version", "recorded at", "actor", "action", "summary", "reason"),
        rows,
    )


@app.command()
def diff(
    service: Service,
    a: Annotated[int, typer.Argument(help="from this version")],
    b: Annotated[int | None, typer.Argument(help="to this version (default: current)")] = None,
    environment: Environment = "default",
    json_out: Json = False,
) -> None:
    """What changed between two versions (B: the current one); secrets masked."""
    answer = client().diff(service, environment, a, b)
    if json_out:
        print_json(answer)
    else:
        show_changes(f"{service}/{environment}: v{answer['from']} -> v{answer['to']}", answer)


@app.command()
def rollback(
    service: Service,
    version: Annotated[int, typer.Argument(help="the version whose document comes back")],
    reason: Annotated[str, typer.Option(help="why (kept with the new version)")],
    environment: Environment = "default",
    json_out: Json = False,
) -> None:
    """Make a version's document current again (as a new version)."""
    answer = client().rollback(service, environment, version, reason)
    if json_out:
        print_json(answer)
    elif answer["changed"]:
        print(
            f"{service}/{environment} is now version {answer['version']} "
            f"(the document of version {version})"
        )
    else:
        print(answer.get("message", "nothing changed"))


@app.command()
def blame(service: Service, environment: Environment = "default", json_out: Json = False) -> None:
    """Who last changed each key, when and why."""
    answer = client().blame(service, environment)
    if json_out:
        print_json(answer)
        return
    rows = [
        (
            ".".join(item["path"]),
            str(item["version"]),
            item["recorded_at"],
            (item.get("actor") or {}).get("name", ""),
            item["action"],
            item.get("reason") or "",
        )
        for item in answer["keys"]
    ]
    table(
        f"{service}/{environment}",
        ("key", "version", "recorded at", "actor", "action", "reason"),
        rows,
    )


@app.command()
def compare(service: Service, env_a: str, env_b: str, json_out: Json = False) -> None:
    """What differs between two environments."""
    answer = client().compare(service, env_a, env_b)
    if json_out:
        print_json(answer)
        return
    show_changes(
        f"{service}: {env_a} (v{answer['from_version']}) -> {env_b} (v{answer['to_version']})",
        answer,
    )


@app.command()
def clients(service: Service, environment: Environment = "default", json_out: Json = False) -> None:
    """Read receipts: the version each API key last fetched, and who is behind."""
    answer = client().clients(service, environment)
    if json_out:
        print_json(answer)
        return
    rows = []
    for item in answer["clients"]:
        read = "never" if item["version"] is None else str(item["version"])
        mark = "[red]behind[/red]" if item["behind"] else "[green]current[/green]"
        rows.append((item["name"], item["prefix"], read, item["read_at"] or "", mark))
    table(
        f"{service}/{environment}: version {answer['version']}",
        ("key", "prefix", "version read", "when", ""),
        rows,
    )


@secrets.command("declare")
def secrets_declare(
    service: Service,
    paths: Annotated[
        list[str] | None, typer.Argument(help="key paths such as database.password")
    ] = None,
    json_out: Json = False,
) -> None:
    """Set the key paths a service declares secret (the whole list)."""
    answer: dict[str, Any] = client().declare_secrets(service, paths or [])
    if json_out:
        print_json(answer)
        return
    print(f"{service}: declared secret: {', '.join(answer['paths']) or '(none)'}")
    print(f"  and every key matching {', '.join(answer['patterns'])}")
    for path, count in answer["plaintext_versions"].items():
        if count:
            print(f"  {path}: {count} earlier version(s) hold it in plain text")


@secrets.command("destroy")
def secrets_destroy(
    service: Service,
    up_to: Annotated[int, typer.Option("--up-to", metavar="VERSION", help="versions 1..VERSION")],
    reason: Annotated[str, typer.Option(help="why (kept with the record)")],
    environment: Environment = "default",
    json_out: Json = False,
) -> None:
    """Crypto-shred the secret values of versions up to N for ever (the current values are
    sealed afresh first)."""
    answer = client().destroy_secrets(service, environment, up_to, reason)
    if json_out:
        print_json(answer)
    elif answer["changed"]:
        print(
            f"{service}/{environment}: destroyed {len(answer['destroyed_keys'])} data "
            f"key(s); secret values of versions 1..{answer['unreadable_through_version']} can no "
            f"longer be read; version {answer['version']} records it"
        )
    else:
        print(f"{service}/{environment}: nothing sealed in those versions to destroy")
