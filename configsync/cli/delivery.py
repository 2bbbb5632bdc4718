"""From the store into the process: get, set, edit, export, import, and run a command with the
config as its environment (restarted or signalled when the config changes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from configsync.cli.base import Environment, Service, app, client, show_changes
from configsync.errors import InvalidInput

FORMATS = ("dotenv", "json", "yaml")
FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


def _say(text: str) -> None:
    print(f"configsync: {text}", file=sys.stderr)


def _current(server: Any, service: str, environment: str, **options: Any) -> dict[str, Any]:
    """The config now; says on stderr when the server was away and a cached copy answered."""
    answer: dict[str, Any] = server.get(service, environment, **options)
    if answer.get("stale"):
        fetched = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(answer.get("fetched_at", 0)))
        _say(
            f"{server.url} cannot be reached: using the cached copy of {service}/{environment} "
            f"version {answer['version']} (fetched {fetched})"
        )
    return answer


# --- get, set, edit --------------------------------------------------------------------------


@app.command()
def get(
    service: Service,
    environment: Environment = "default",
    key: Annotated[
        str | None, typer.Option("--key", "-k", help="one value, by its dotted path")
    ] = None,
    version: Annotated[int | None, typer.Option(help="as it was at this version")] = None,
) -> None:
    """Print a config's document as JSON (or one value with --key: strings bare)."""
    from configsync.domain.documents import parse_key

    params = {"version": version} if version is not None else {}
    document: Any = _current(client(), service, environment, **params)["data"]
    if key is not None:
        for part in parse_key(key):
            if not isinstance(document, dict) or part not in document:
                raise InvalidInput(f"{service}/{environment} has no key {key!r}")
            document = document[part]
    if isinstance(document, str) and key is not None:
        print(document)
    else:
        print(json.dumps(document, indent=2, ensure_ascii=False))


def parse_value(text: str) -> Any:
    """A value given on the command line: JSON when it reads as JSON (30, true, null, {"a": 1},
    "quoted"), the text itself otherwise."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def merge_patch_of(assignments: list[str]) -> dict[str, Any]:
    """`a.b=1 C=x` -> {"a": {"b": 1}, "C": "x"}."""
    from configsync.domain.documents import parse_key

    patch: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        if not sep or not name:
            raise InvalidInput(f"{assignment!r} is not KEY=VALUE")
        path = parse_key(name)
        target = patch
        for part in path[:-1]:
            nested = target.setdefault(part, {})
            if not isinstance(nested, dict):
                raise InvalidInput(f"{name!r} sets a key inside {part!r}, which is set too")
            target = nested
        target[path[-1]] = parse_value(text)
    return patch


@app.command("set")
def set_(
    service: Service,
    assignments: Annotated[list[str], typer.Argument(help="KEY=VALUE (a.b=VALUE for nested keys)")],
    environment: Environment = "default",
    reason: Annotated[str | None, typer.Option(help="why (kept with the version)")] = None,
    expected_version: Annotated[
        int | None, typer.Option(help="refuse unless the config is at this version (0: new)")
    ] = None,
) -> None:
    """Set keys as a JSON merge patch: values are JSON when they read as JSON (30, true,
    {"a": 1}), text otherwise; null removes a key."""
    patch = merge_patch_of(assignments)
    answer = client().patch(
        service, environment, patch, reason=reason, expected_version=expected_version
    )
    what = "changed" if answer["changed"] else "unchanged"
    print(f"{service}/{environment}: version {answer['version']} ({what})")


def _editor() -> list[str]:
    import shlex

    return shlex.split(os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi")


@app.command()
def edit(
    service: Service,
    environment: Environment = "default",
    reason: Annotated[str | None, typer.Option(help="why (kept with the version)")] = None,
) -> None:
    """Open the document in $EDITOR and write it back as a new version, only if nobody wrote
    meanwhile (the edit is kept in a file when somebody did)."""
    import tempfile

    from configsync.client import Conflict, NotFound

    server = client()
    try:
        start = server.get(service, environment, fallback=False)
        version, document = start["version"], start["data"]
    except NotFound:
        version, document = 0, {}  # a new config
    folder = Path(tempfile.mkdtemp(prefix="configsync-edit-"))  # 0700: secrets are in it
    path = folder / f"{service}.{environment}.json"
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    os.chmod(path, 0o600)
    if subprocess.run([*_editor(), str(path)]).returncode != 0:
        raise InvalidInput(f"the editor failed; nothing written (the file is {path})")
    try:
        edited = json.loads(path.read_text())
    except ValueError as exc:
        raise InvalidInput(f"not JSON ({exc}); nothing written (the file is {path})") from None
    if not isinstance(edited, dict):
        raise InvalidInput(f"a config is a JSON object; nothing written (the file is {path})")
    if edited == document:
        print(f"{service}/{environment}: no change")
        path.unlink()
        folder.rmdir()
        return
    try:
        answer = server.put(
            service,
            environment,
            edited,
            reason=reason or "edited with configsync edit",
            expected_version=version,
        )
    except Conflict as exc:
        raise InvalidInput(
            f"{service}/{environment} changed while you edited it (now version "
            f"{exc.current_version}, you started from {version}): nothing written; your edit "
            f"is kept in {path}"
        ) from None
    path.unlink()
    folder.rmdir()
    print(f"{service}/{environment}: version {answer['version']} (from version {version})")


# --- export and import -----------------------------------------------------------------------


@app.command()
def export(
    service: Service,
    environment: Environment = "default",
    format: Annotated[str, typer.Option("--format", "-f", help="dotenv, json or yaml")] = "dotenv",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="a file (default: stdout)")
    ] = None,
) -> None:
    """Write a config as a .env file, JSON or YAML. A file is written atomically and readable
    by its owner only (0600): a config's values include its secrets."""
    from configsync.client import write_private

    if format not in FORMATS:
        raise InvalidInput(f"--format must be one of {', '.join(FORMATS)}")
    server = client()
    text = server.export(service, environment, "raw" if format == "json" else format)
    if format == "json":
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    write_private(output, text)
    print(f"{service}/{environment} written to {output} ({format}, 0600)", file=sys.stderr)


def read_document(path: Path, fmt: str | None) -> dict[str, Any]:
    """A document from a .env (read as python-dotenv reads it), JSON or YAML file."""
    from configsync.configs.rendering import render_dotenv

    name = path.name.lower()
    if fmt is None:
        if name.endswith((".json",)):
            fmt = "json"
        elif name.endswith((".yaml", ".yml")):
            fmt = "yaml"
        elif name == ".env" or name.endswith(".env") or name.startswith(".env"):
            fmt = "dotenv"
        else:
            raise InvalidInput(f"cannot tell the format of {path}: give --format dotenv|json|yaml")
    if fmt not in FORMATS:
        raise InvalidInput(f"--format must be one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise InvalidInput(f"no file {path}")
    if fmt == "dotenv":
        from dotenv import dotenv_values

        values = dotenv_values(path, interpolate=True)
        bare = [key for key, value in values.items() if value is None]
        if bare:
            raise InvalidInput(f"keys without a value (no '='): {', '.join(bare)}")
        document: Any = dict(values)
        render_dotenv(document)  # refuses, by name, what a .env could not carry back
        return dict(document)
    text = path.read_text(encoding="utf-8")
    try:
        if fmt == "json":
            document = json.loads(text)
        else:
            import yaml

            document = yaml.safe_load(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        raise InvalidInput(f"{path} is not valid {fmt}: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidInput(f"{path} must hold a mapping of keys to values")
    return document


@app.command("import")
def import_(
    service: Service,
    file: Annotated[Path, typer.Argument(help="a .env, .json or .yaml file")],
    environment: Environment = "default",
    format: Annotated[
        str | None, typer.Option("--format", "-f", help="dotenv, json or yaml")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="write without asking")] = False,
    reason: Annotated[str | None, typer.Option(help="why (default: imported from FILE)")] = None,
) -> None:
    """Replace a config with a file's contents: shows the diff against the current version,
    asks (or --yes), writes one version, refused if somebody wrote meanwhile."""
    from configsync.client import Conflict, Deleted, NotFound
    from configsync.configs.queries import Difference
    from configsync.domain.documents import compute_changes

    document = read_document(file, format)
    server = client()
    expected: int | None
    try:
        current = server.get(service, environment, fallback=False)
        expected, before = current["version"], current["data"]
    except Deleted as exc:
        expected, before = exc.deleted_at_version, {}
    except NotFound:
        expected, before = 0, {}
    changes = compute_changes(before, document)
    if not changes:
        print(f"{service}/{environment}: {file} matches version {expected}; nothing to write")
        return
    difference = Difference.of(changes)
    show_changes(
        f"{service}/{environment}: version {expected} -> {file}",
        {"changes": difference.changes, "stats": difference.stats},
    )
    if not yes:
        if not sys.stdin.isatty():
            raise InvalidInput("not written: confirm with --yes when not at a terminal")
        typer.confirm("Write this as a new version?", abort=True)
    try:
        answer = server.put(
            service,
            environment,
            document,
            reason=reason or f"imported from {file.name}",
            expected_version=expected,
        )
    except Conflict as exc:
        raise InvalidInput(
            f"{service}/{environment} changed meanwhile (now version {exc.current_version}): "
            "nothing written; run the import again to see the new diff"
        ) from None
    print(f"{service}/{environment}: version {answer['version']} written from {file}")


# --- run -------------------------------------------------------------------------------------


def environment_of(document: dict[str, Any], only: bool) -> dict[str, str]:
    """The command's environment: the config's keys as variables (values that are not strings
    as compact JSON), over the inherited ones unless `only`."""
    from configsync.configs.rendering import ENV_NAME, dotenv_string

    bad = [key for key in document if not ENV_NAME.fullmatch(key)]
    if bad:
        raise InvalidInput(
            f"these keys are not environment variable names: {', '.join(map(repr, bad[:10]))}"
        )
    base = {} if only else dict(os.environ)
    return {**base, **{key: dotenv_string(value) for key, value in document.items()}}


class Supervisor:
    """The command, run as a child; restarted (SIGTERM, `grace` seconds, SIGKILL) or signalled
    when the config changes, given the signals this process receives."""

    def __init__(self, command: list[str], grace: float) -> None:
        self.command = command
        self.grace = grace
        self.lock = threading.Lock()
        self.child: subprocess.Popen[bytes] | None = None
        self.restarting = False
        self.stopping = False

    def start(self, env: dict[str, str]) -> None:
        try:
            self.child = subprocess.Popen(self.command, env=env)
        except OSError as exc:
            raise InvalidInput(f"cannot run {self.command[0]!r}: {exc.strerror}") from None

    def forward(self, signum: int, _frame: Any = None) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    def signal(self, signum: int) -> None:
        self.forward(signum)

    def restart(self, env: dict[str, str]) -> None:
        with self.lock:
            if self.stopping:
                return
            self.restarting = True
            try:
                old = self.child
                if old is not None and old.poll() is None:
                    old.terminate()
                    try:
                        old.wait(self.grace)
                    except subprocess.TimeoutExpired:
                        old.kill()
                        old.wait()
                if not self.stopping:
                    self.start(env)
            finally:
                self.restarting = False

    def wait(self) -> int:
        """The exit code of the command's last run (128 + N when a signal N ended it)."""
        while True:
            child = self.child
            assert child is not None
            code = child.wait()
            with self.lock:
                if self.child is child and not self.restarting:
                    return code if code >= 0 else 128 - code
            time.sleep(0.01)  # replaced: wait for the new child


@app.command()
def run(
    service: Service,
    command: Annotated[list[str], typer.Argument(help="the command and its arguments, after --")],
    environment: Environment = "default",
    only: Annotated[
        bool, typer.Option("--only", help="start from an empty environment: the config alone")
    ] = False,
    watch: Annotated[
        bool,
        typer.Option("--watch", help="restart (or signal) the command when the config changes"),
    ] = False,
    signal_name: Annotated[
        str | None,
        typer.Option(
            "--signal", help="with --watch: send this signal (HUP, USR1…) instead of restarting"
        ),
    ] = None,
    grace: Annotated[
        float, typer.Option(help="seconds between SIGTERM and SIGKILL on a restart")
    ] = 10.0,
    no_fallback: Annotated[
        bool,
        typer.Option(
            "--no-fallback", help="refuse to start from the cached copy when the server is away"
        ),
    ] = False,
) -> None:
    """Run a command with the config as environment variables:
    configsync run SERVICE -e ENV -- CMD ARGS... Exits with the command's exit code."""
    from configsync.client import Unavailable, Unreachable

    signum = None
    if signal_name is not None:
        name = signal_name.upper()
        signum = getattr(signal, name if name.startswith("SIG") else f"SIG{name}", None)
        if not isinstance(signum, signal.Signals):
            raise InvalidInput(f"no signal {signal_name!r}: use HUP, USR1, USR2…")
    server = client()
    try:
        answer = _current(server, service, environment, fallback=not no_fallback)
    except (Unreachable, Unavailable) as exc:
        why = "--no-fallback was given" if no_fallback else "there is no cached copy of it"
        raise InvalidInput(
            f"cannot read {service}/{environment} from {server.url} ({exc.detail}) and {why}: "
            f"not running {command[0]}"
        ) from None
    supervisor = Supervisor(command, grace)
    supervisor.start(environment_of(answer["data"], only))
    for forwarded in FORWARDED:
        signal.signal(forwarded, supervisor.forward)
    if watch:
        threading.Thread(
            target=_follow,
            args=(server, service, environment, answer["version"], supervisor, only, signum),
            name="configsync-run-watch",
            daemon=True,
        ).start()
    raise typer.Exit(supervisor.wait())


def _follow(
    server: Any,
    service: str,
    environment: str,
    version: int,
    supervisor: Supervisor,
    only: bool,
    signum: int | None,
) -> None:
    for change in server.watch(service, environment, since=version):
        if change.get("deleted"):
            _say(
                f"{service}/{environment} was deleted (version {change['version']}); still running"
            )
            continue
        if signum is not None:
            _say(f"{service}/{environment} is now version {change['version']}: signalling")
            supervisor.signal(signum)
            continue
        try:
            env = environment_of(change["data"], only)
        except InvalidInput as exc:
            _say(
                f"version {change['version']} cannot be run ({exc.detail}); still running the last"
            )
            continue
        _say(f"{service}/{environment} is now version {change['version']}: restarting")
        supervisor.restart(env)
