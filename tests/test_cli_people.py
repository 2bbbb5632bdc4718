"""The command line for people: login keeps a private token; history, diff, rollback, compare."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD, clean_env, cli, cli_login, running_server

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path, pg_url: str, pg: Any) -> Iterator[str]:
    env = clean_env(
        DATABASE_URL=pg_url, SECRET_KEY="k" * 48, CONFIGSYNC_AUDIT_LOG=str(tmp_path / "a.log")
    )
    with running_server(tmp_path, env) as url:
        yield url


def test_people_commands_against_a_server(server: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = clean_env(CONFIGSYNC_URL=server, XDG_CONFIG_HOME=str(home))
    not_yet = cli("history", "pay", env=env)
    assert not_yet.returncode == 1 and "not logged in" in not_yet.stderr

    httpx.post(server + "/auth/signup", json={"email": "ops@example.com", "password": PASSWORD})
    wrong = cli("login", "ops@example.com", env=env, stdin="not-the-password\n")
    assert wrong.returncode == 1 and "401" in wrong.stderr
    login = cli("login", "ops@example.com", env=env, stdin=PASSWORD + "\n")
    assert login.returncode == 0, login.stderr
    saved = home / "configsync" / "credentials.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    token = json.loads(saved.read_text())["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    for doc in ({"A": 1, "B": 1}, {"A": 2, "B": 1, "C": 3}):
        httpx.put(server + "/v1/configs/pay/prod", headers=auth, json={"data": doc, "reason": "r"})
    httpx.put(server + "/v1/configs/pay/staging", headers=auth, json={"data": {"A": 9}})

    history = cli("history", "pay", "-e", "prod", "--json", env=env)
    assert [i["version"] for i in json.loads(history.stdout)["items"]] == [2, 1]
    table = cli("history", "pay", "-e", "prod", env=env)
    assert table.returncode == 0 and "ops@example.com" in table.stdout and "created" in table.stdout

    diff = json.loads(cli("diff", "pay", "1", "2", "-e", "prod", "--json", env=env).stdout)
    assert diff["stats"] == {"added": 1, "removed": 0, "changed": 1}
    shown = cli("diff", "pay", "1", "-e", "prod", env=env).stdout
    assert "~ A: 1 -> 2" in shown and "+ C: 3" in shown

    compare = json.loads(cli("compare", "pay", "prod", "staging", "--json", env=env).stdout)
    assert {c["path"][0] for c in compare["changes"]} == {"A", "B", "C"}

    rolled = cli("rollback", "pay", "1", "--reason", "bad deploy", "-e", "prod", env=env)
    assert rolled.returncode == 0 and "now version 3" in rolled.stdout
    current = httpx.get(server + "/v1/configs/pay/prod", headers=auth).json()
    assert current["version"] == 3 and current["data"] == {"A": 1, "B": 1}
    again = cli("rollback", "pay", "1", "--reason", "again", "-e", "prod", env=env)
    assert "nothing appended" in again.stdout
    missing = cli("rollback", "pay", "99", "--reason", "x", "-e", "prod", env=env)
    assert missing.returncode == 1 and "404" in missing.stderr


def test_secrets_commands_against_a_server(server: str, tmp_path: Path) -> None:
    env, auth = cli_login(server, tmp_path)
    url = server + "/v1/configs/pay/prod"
    for doc in ({"DB_PASSWORD": "hunter2", "db": {"host": "a"}}, {"DB_PASSWORD": "swordfish"}):
        httpx.put(url, headers=auth, json={"data": doc})

    shown = cli("diff", "pay", "1", "2", "-e", "prod", env=env)
    assert shown.returncode == 0 and "hunter2" not in shown.stdout + shown.stderr
    masked = [line for line in shown.stdout.splitlines() if "DB_PASSWORD" in line]
    assert len(masked) == 1 and masked[0].count("***") == 2  # old and new, by fingerprint

    declared = cli("secrets", "declare", "pay", "db.host", env=env)
    assert declared.returncode == 0, declared.stderr
    assert "db.host" in declared.stdout and "1 earlier version(s)" in declared.stdout

    destroyed = cli(
        "secrets", "destroy", "pay", "--up-to", "1", "--reason", "leaked", "-e", "prod", env=env
    )
    assert destroyed.returncode == 0, destroyed.stderr
    assert "versions 1..2 can no longer be read" in destroyed.stdout
    old = httpx.get(url, headers=auth, params={"version": 1}).json()["data"]
    assert old["DB_PASSWORD"]["destroyed"] is True
    assert httpx.get(url, headers=auth).json()["data"]["DB_PASSWORD"] == "swordfish"
    shown = cli("diff", "pay", "1", "2", "-e", "prod", env=env)
    assert "***" in shown.stdout and "swordfish" not in shown.stdout


def test_clients_command_shows_who_is_behind(server: str, tmp_path: Path) -> None:
    env, auth = cli_login(server, tmp_path)
    url = server + "/v1/configs/pay/prod"
    httpx.put(url, headers=auth, json={"data": {"A": 1}})
    made = httpx.post(
        server + "/v1/api-keys",
        headers=auth,
        json={"name": "billing-api", "service": "pay", "permission": "read"},
    ).json()
    assert httpx.get(url, headers={"X-API-Key": made["key"]}).status_code == 200
    httpx.put(url, headers=auth, json={"data": {"A": 2}})

    listed = json.loads(cli("clients", "pay", "-e", "prod", "--json", env=env).stdout)
    assert listed["version"] == 2
    assert [(c["name"], c["version"], c["behind"]) for c in listed["clients"]] == [
        ("billing-api", 1, True)
    ]
    table = cli("clients", "pay", "-e", "prod", env=env)
    assert table.returncode == 0 and "billing-api" in table.stdout and "behind" in table.stdout


def test_whoami_and_logout(server: str, tmp_path: Path) -> None:
    env, auth = cli_login(server, tmp_path)
    shown = cli("whoami", env=env)
    assert shown.returncode == 0 and "ops@example.com (user)" in shown.stdout
    me = json.loads(cli("whoami", "--json", env=env).stdout)
    assert me["kind"] == "user" and me["email"] == "ops@example.com"
    saved = tmp_path / "config" / "configsync" / "credentials.json"
    token = json.loads(saved.read_text())["access_token"]

    out = cli("logout", env=env)
    assert out.returncode == 0 and "logged out" in out.stdout
    assert not saved.exists()  # forgotten here ...
    me_again = httpx.get(server + "/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me_again.status_code == 401  # ... and revoked on the server
    after = cli("whoami", env=env)
    assert after.returncode == 1 and "not logged in" in after.stderr

    # A service's key: whoami names the key and what it may do.
    env, auth = cli_login(server, tmp_path / "again")
    httpx.put(server + "/v1/configs/pay/prod", headers=auth, json={"data": {"A": 1}})
    key = httpx.post(
        server + "/v1/api-keys",
        headers=auth,
        json={"name": "billing", "service": "pay", "permission": "read"},
    ).json()["key"]
    as_key = cli("whoami", env={**env, "CONFIGSYNC_API_KEY": key})
    assert as_key.returncode == 0 and "API key billing (read on pay/*)" in as_key.stdout
