"""The delivery commands against a real server: get, set, edit, export, import, run (with
--watch, --signal, the cached copy and --no-fallback)."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from dotenv import dotenv_values

from tests.conftest import clean_env, cli, cli_login, eventually, running_server

pytestmark = pytest.mark.slow
CONFIGSYNC = str(Path(sys.executable).with_name("configsync"))


@pytest.fixture
def server_env(tmp_path: Path, pg_url: str, pg: Any) -> dict[str, str]:
    return clean_env(
        DATABASE_URL=pg_url, SECRET_KEY="k" * 48, CONFIGSYNC_AUDIT_LOG=str(tmp_path / "a.log")
    )


@pytest.fixture
def server(tmp_path: Path, server_env: dict[str, str]) -> Iterator[str]:
    with running_server(tmp_path, server_env) as url:
        yield url


def _api_key_env(server: str, auth: dict[str, str], tmp_path: Path, service: str) -> dict[str, str]:
    made = httpx.post(
        server + "/v1/api-keys",
        headers=auth,
        json={"name": f"{service}-run", "service": service, "permission": "read"},
    ).json()
    return clean_env(
        CONFIGSYNC_URL=server,
        CONFIGSYNC_API_KEY=made["key"],
        XDG_CACHE_HOME=str(tmp_path / "service-cache"),
        XDG_CONFIG_HOME=str(tmp_path / "service-config"),
    )


def test_get_set_and_edit(server: str, tmp_path: Path) -> None:
    env, auth = cli_login(server, tmp_path)
    url = server + "/v1/configs/pay/prod"
    made = cli(
        "set",
        "pay",
        "-e",
        "prod",
        "TIMEOUT=30",
        "NAME=hello world",
        "db.port=5432",
        'FLAGS={"a": true}',
        "--reason",
        "first",
        env=env,
    )
    assert made.returncode == 0, made.stderr
    assert "version 1" in made.stdout
    assert httpx.get(url, headers=auth).json()["data"] == {
        "TIMEOUT": 30,
        "NAME": "hello world",
        "db": {"port": 5432},
        "FLAGS": {"a": True},
    }
    assert cli("set", "pay", "-e", "prod", "NAME=null", 'QUOTED="30"', env=env).returncode == 0
    data = httpx.get(url, headers=auth).json()["data"]
    assert "NAME" not in data and data["QUOTED"] == "30"  # null removes; JSON quotes keep text
    history = httpx.get(url + "/history", headers=auth).json()["items"]
    assert history[-1]["reason"] == "first"
    stale = cli("set", "pay", "-e", "prod", "X=1", "--expected-version", "1", env=env)
    assert stale.returncode == 1 and "412" in stale.stderr
    bad = cli("set", "pay", "-e", "prod", "no-equals-sign", env=env)
    assert bad.returncode == 1 and "KEY=VALUE" in bad.stderr

    whole = json.loads(cli("get", "pay", "-e", "prod", env=env).stdout)
    assert whole == httpx.get(url, headers=auth).json()["data"]
    assert cli("get", "pay", "-e", "prod", "--key", "db.port", env=env).stdout.strip() == "5432"
    assert cli("get", "pay", "-e", "prod", "-k", "QUOTED", env=env).stdout == "30\n"
    old = json.loads(cli("get", "pay", "-e", "prod", "--version", "1", env=env).stdout)
    assert old["NAME"] == "hello world"
    missing = cli("get", "pay", "-e", "prod", "--key", "nope", env=env)
    assert missing.returncode == 1 and "no key 'nope'" in missing.stderr

    # edit: $EDITOR changes the document; written with the version it started from.
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import json, os, sys\n"
        "path = sys.argv[1]\n"
        "assert oct(os.stat(path).st_mode & 0o777) == '0o600'\n"
        "doc = json.load(open(path))\n"
        "doc['EDITS'] = doc.get('EDITS', 0) + 1\n"
        "if os.environ.get('RACE'):\n"
        "    import httpx\n"
        "    httpx.patch(os.environ['RACE'], headers={'Authorization': os.environ['AUTH']},\n"
        "                json={'data': {'OTHER': 1}}).raise_for_status()\n"
        "json.dump(doc, open(path, 'w'))\n"
    )
    edit_env = {**env, "EDITOR": f"{sys.executable} {editor}"}
    edited = cli("edit", "pay", "-e", "prod", "--reason", "by hand", env=edit_env)
    assert edited.returncode == 0, edited.stderr
    after = httpx.get(url, headers=auth).json()
    assert after["data"]["EDITS"] == 1
    assert httpx.get(url + "/history", headers=auth).json()["items"][0]["reason"] == "by hand"
    # Somebody writes while the editor is open: nothing is overwritten, the edit is kept.
    raced = cli(
        "edit",
        "pay",
        "-e",
        "prod",
        env={**edit_env, "RACE": url, "AUTH": auth["Authorization"]},
    )
    assert raced.returncode == 1 and "changed while you edited" in raced.stderr
    kept = Path(raced.stderr.rsplit("kept in ", 1)[1].strip())
    assert json.loads(kept.read_text())["EDITS"] == 2
    final = httpx.get(url, headers=auth).json()
    assert final["version"] == after["version"] + 1 and final["data"]["OTHER"] == 1
    assert final["data"]["EDITS"] == 1  # the racing write stands; the edit was not forced in


ROUND_TRIP = {
    "API_URL": "https://api.example.com/v1?a=1&b=2",
    "GREETING": "it's here",
    "PRICE": '$5 "net"',
    "TIMEOUT": "30",
    "MULTI": "line one\nline two",
    "HASH": "a # not a comment",
}


@pytest.mark.parametrize("fmt", ["dotenv", "json", "yaml"])
def test_export_then_import_round_trips(server: str, tmp_path: Path, fmt: str) -> None:
    env, auth = cli_login(server, tmp_path)
    document: dict[str, Any] = dict(ROUND_TRIP)
    if fmt != "dotenv":  # a .env holds strings only; the others keep types and nesting
        document |= {"PORT": 5432, "ON": True, "nested": {"list": [1, "two", None]}}
    url = server + "/v1/configs/pay/prod"
    httpx.put(url, headers=auth, json={"data": document}).raise_for_status()
    out = tmp_path / f"export.{ {'dotenv': 'env', 'json': 'json', 'yaml': 'yaml'}[fmt] }"
    exported = cli("export", "pay", "-e", "prod", "--format", fmt, "-o", str(out), env=env)
    assert exported.returncode == 0, exported.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")] == []
    if fmt == "dotenv":
        assert dotenv_values(out) == document
    elif fmt == "json":
        assert json.loads(out.read_text()) == document
    else:
        assert yaml.safe_load(out.read_text()) == document
    # On stdout too.
    assert cli("export", "pay", "-e", "prod", "--format", fmt, env=env).stdout == out.read_text()

    imported = cli("import", "pay", str(out), "-e", "staging", "--yes", env=env)
    assert imported.returncode == 0, imported.stderr
    staging = httpx.get(server + "/v1/configs/pay/staging", headers=auth).json()
    assert staging["data"] == document and staging["version"] == 1
    again = cli("import", "pay", str(out), "-e", "staging", "--yes", env=env)
    assert again.returncode == 0 and "nothing to write" in again.stdout


def test_import_reads_a_dotenv_as_python_dotenv_does_and_shows_the_diff(
    server: str, tmp_path: Path
) -> None:
    env, auth = cli_login(server, tmp_path)
    url = server + "/v1/configs/web/prod"
    httpx.put(url, headers=auth, json={"data": {"OLD": "x", "KEPT": "same"}}).raise_for_status()
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# a comment\n"
        "export EXPORTED=yes\n"
        "KEPT=same\n"
        "SINGLE='single $NOT_EXPANDED'\n"
        'DOUBLE="double \\"quoted\\""\n'
        "HASHED=value # a comment after it\n"
        "QUOTED_HASH='a # inside quotes'\n"
        'MULTI="first\nsecond"\n'
        "BASE=/srv\n"
        "DERIVED=${BASE}/app\n"
        "EMPTY=\n"
    )
    expected = dotenv_values(dotenv)
    shown = cli(
        "import", "web", str(dotenv), "-e", "prod", "--yes", "--reason", "from .env", env=env
    )
    assert shown.returncode == 0, shown.stderr
    assert "- OLD" in shown.stdout and "+ EXPORTED" in shown.stdout and "KEPT" not in shown.stdout
    stored = httpx.get(url, headers=auth).json()
    assert stored["data"] == expected and stored["data"]["DERIVED"] == "/srv/app"
    assert httpx.get(url + "/history", headers=auth).json()["items"][0]["reason"] == "from .env"

    # Not at a terminal and no --yes: nothing is written.
    dotenv.write_text("ONLY=one\n")
    asked = cli("import", "web", str(dotenv), "-e", "prod", env=env)
    assert asked.returncode == 1 and "--yes" in asked.stderr
    assert httpx.get(url, headers=auth).json()["version"] == stored["version"]
    # Values a .env could not carry back are refused by name, and so are keys without a value.
    dotenv.write_text('FINE=ok\nMIXED="it\'s $5"\nBARE\n')
    refused = cli("import", "web", str(dotenv), "-e", "prod", "--yes", env=env)
    assert refused.returncode == 1 and "BARE" in refused.stderr
    dotenv.write_text('FINE=ok\nMIXED="it\'s $5"\n')
    refused = cli("import", "web", str(dotenv), "-e", "prod", "--yes", env=env)
    assert refused.returncode == 1 and "MIXED" in refused.stderr and "FINE" not in refused.stderr
    unknown = tmp_path / "config.txt"
    unknown.write_text("A=1\n")
    assert "--format" in cli("import", "web", str(unknown), "--yes", env=env).stderr


def _child(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "child.py"
    script.write_text(body)
    return [sys.executable, str(script)]


def test_run_passes_the_config_the_exit_code_and_signals(server: str, tmp_path: Path) -> None:
    _, auth = cli_login(server, tmp_path)
    url = server + "/v1/configs/job/prod"
    httpx.put(url, headers=auth, json={"data": {"GREETING": "hi", "CODE": 7, "NESTED": {"a": 1}}})
    env = {**_api_key_env(server, auth, tmp_path, "job"), "INHERITED": "yes"}
    command = _child(
        tmp_path,
        "import os, sys\n"
        "print(os.environ['GREETING'], os.environ['NESTED'], os.environ.get('INHERITED'))\n"
        "sys.exit(int(os.environ['CODE']))\n",
    )
    done = cli("run", "job", "-e", "prod", "--", *command, env=env)
    assert done.returncode == 7, done.stderr
    assert done.stdout.strip() == 'hi {"a":1} yes'
    only = cli("run", "job", "-e", "prod", "--only", "--", *command, env=env)
    assert only.returncode == 7 and only.stdout.strip() == 'hi {"a":1} None'

    # SIGTERM to configsync reaches the command, whose exit code comes back.
    marker = tmp_path / "started"
    trapping = _child(
        tmp_path,
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(42))\n"
        f"pathlib.Path({str(marker)!r}).write_text('up')\n"
        "time.sleep(60)\n",
    )
    process = subprocess.Popen([CONFIGSYNC, "run", "job", "-e", "prod", "--", *trapping], env=env)
    assert eventually(marker.exists, 20)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 42


def test_run_watch_restarts_or_signals_on_a_write(server: str, tmp_path: Path) -> None:
    _, auth = cli_login(server, tmp_path)
    url = server + "/v1/configs/svc/prod"
    httpx.put(url, headers=auth, json={"data": {"COLOUR": "red"}}).raise_for_status()
    env = _api_key_env(server, auth, tmp_path, "svc")
    lines = tmp_path / "lines"
    command = _child(
        tmp_path,
        "import os, signal, time\n"
        f"out = open({str(lines)!r}, 'a', buffering=1)\n"
        "signal.signal(signal.SIGHUP, lambda *_: out.write(f'HUP {os.getpid()}\\n'))\n"
        "out.write(f\"{os.environ['COLOUR']} {os.getpid()}\\n\")\n"
        "while True: time.sleep(0.05)\n",
    )

    def seen() -> list[list[str]]:
        return [line.split() for line in lines.read_text().splitlines()] if lines.exists() else []

    restart = subprocess.Popen(
        [CONFIGSYNC, "run", "svc", "-e", "prod", "--watch", "--grace", "2", "--", *command],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert eventually(lambda: len(seen()) == 1, 20)
        first_pid = seen()[0][1]
        time.sleep(0.5)  # the long poll is waiting
        written = time.monotonic()
        httpx.put(url, headers=auth, json={"data": {"COLOUR": "blue"}}).raise_for_status()
        assert eventually(lambda: len(seen()) == 2, 10), seen()
        took = time.monotonic() - written
        colour, pid = seen()[1]
        assert colour == "blue" and pid != first_pid
        print(f"restarted {took:.2f} s after the write")
    finally:
        restart.send_signal(signal.SIGTERM)
        restart.wait(timeout=20)
    assert "now version 2: restarting" in (restart.stderr.read() if restart.stderr else "")

    lines.unlink()
    signalled = subprocess.Popen(
        [CONFIGSYNC, "run", "svc", "-e", "prod", "--watch", "--signal", "HUP", "--", *command],
        env=env,
    )
    try:
        assert eventually(lambda: len(seen()) == 1, 20)
        pid = seen()[0][1]
        time.sleep(0.5)
        httpx.put(url, headers=auth, json={"data": {"COLOUR": "green"}}).raise_for_status()
        assert eventually(lambda: len(seen()) == 2, 10), seen()
        assert seen()[1] == ["HUP", pid]  # the same process, signalled
    finally:
        signalled.send_signal(signal.SIGTERM)
        signalled.wait(timeout=20)


def test_run_falls_back_to_the_cached_copy_when_the_server_is_away(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    command = _child(tmp_path, "import os\nprint(os.environ['MODE'])\n")
    with running_server(tmp_path, server_env) as server:
        _, auth = cli_login(server, tmp_path)
        url = server + "/v1/configs/cached/prod"
        httpx.put(url, headers=auth, json={"data": {"MODE": "live"}}).raise_for_status()
        env = _api_key_env(server, auth, tmp_path, "cached")
        first = cli("run", "cached", "-e", "prod", "--", *command, env=env)
        assert first.returncode == 0 and first.stdout.strip() == "live"
        assert "cached copy" not in first.stderr
    cache = list((tmp_path / "service-cache" / "configsync").rglob("cached.prod.json"))
    assert len(cache) == 1 and stat.S_IMODE(cache[0].stat().st_mode) == 0o600
    # The server is gone: the last good copy runs the command, and says so.
    away = cli("run", "cached", "-e", "prod", "--", *command, env=env)
    assert away.returncode == 0 and away.stdout.strip() == "live"
    assert "cannot be reached" in away.stderr and "cached copy" in away.stderr
    refused = cli("run", "cached", "-e", "prod", "--no-fallback", "--", *command, env=env)
    assert refused.returncode == 1 and refused.stdout == ""
    assert "--no-fallback" in refused.stderr and "not running" in refused.stderr
    unreachable = cli("history", "cached", "-e", "prod", env=env)
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr
    assert "answered" not in unreachable.stderr and "Traceback" not in unreachable.stderr
    # No copy at all (another service): a clear refusal, not a traceback.
    other = cli("run", "other", "-e", "prod", "--", *command, env=env)
    assert other.returncode == 1 and "no cached copy" in other.stderr


def test_the_cli_starts_quickly_and_every_command_has_help() -> None:
    for args in (["--help"], ["run", "--help"], ["import", "--help"], ["--version"]):
        shown = subprocess.run([CONFIGSYNC, *args], capture_output=True, text=True)
        assert shown.returncode == 0 and shown.stdout, (args, shown.stderr)
    assert (
        "configsync"
        in subprocess.run([CONFIGSYNC, "--version"], capture_output=True, text=True).stdout
    )
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, configsync.cli; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # What --help needs, and nothing slow: no HTTP client, no database layer, no server.
    for heavy in ("'httpx'", "'sqlalchemy'", "'fastapi'", "'celery'"):
        assert heavy not in loaded, heavy
