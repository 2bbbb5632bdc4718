"""The original ConfigSync's endpoints, and its README's curl examples run verbatim."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, Api, clean_env, cli, running_server

README = ROOT.parent / "shared" / "reference" / "original-README.md"
README_COPY = ROOT / "tests" / "fixtures" / "original-README.md"


def readme_curls() -> list[str]:
    """The curl commands of the original README's API examples, in order, as written."""
    text = (README if README.is_file() else README_COPY).read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [b.strip() for b in blocks if b.lstrip().startswith("curl ")]


def test_the_readme_copy_is_the_reference() -> None:
    if not README.is_file():
        pytest.skip("shared/reference is not beside this checkout")
    assert README_COPY.read_text() == README.read_text()


def test_readme_flow_returns_what_the_contract_says(any_api: Api) -> None:
    api = any_api
    assert api.get("/").json() == {
        "status": "ok",
        "service": "ConfigSync",
        "version": api.get("/").json()["version"],
    }
    signed = api.post("/auth/signup", json={"email": "user@email.com", "password": "password123"})
    assert signed.status_code == 201
    assert set(signed.json()) == {"id", "email", "role"} and signed.json()["role"] == "user"
    login = api.post("/auth/login", json={"email": "user@email.com", "password": "password123"})
    assert login.status_code == 200
    token = login.json()
    assert token["token_type"] == "bearer" and token["expires_in"] == 3600
    auth = {"Authorization": f"Bearer {token['access_token']}"}

    for expected_version, timeout in ((1, 30), (2, 45)):
        config = {"API_URL": "https://api.example.com", "TIMEOUT": timeout}
        body = json.dumps({"name": "payment-service", "config": config}, indent=2)
        # curl -d sends application/x-www-form-urlencoded; the body is JSON all the same
        updated = api.post(
            "/config/update",
            content=body,
            headers={**auth, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert updated.status_code == 200, updated.text
        assert updated.json() | {"message": ""} == {
            "status": "success",
            "message": "",
            "service": "payment-service",
            "environment": "default",
            "version": expected_version,
        }
        got = api.get("/config/get?service=payment-service", headers=auth)
        assert got.json() == {
            "service": "payment-service",
            "environment": "default",
            "version": expected_version,
            "config": {"API_URL": "https://api.example.com", "TIMEOUT": timeout},
        }


def test_legacy_update_takes_environment_and_reason_and_refuses_bad_bodies(pg_api: Api) -> None:
    auth = pg_api.person("a@example.com")
    ok = pg_api.post(
        "/config/update",
        headers=auth,
        json={"name": "pay", "environment": "prod", "config": {"A": 1}, "reason": "launch"},
    )
    assert ok.status_code == 200 and ok.json()["environment"] == "prod"
    with pg_api.engine.connect() as conn:
        from sqlalchemy import text

        assert '"reason":"launch"' in conn.scalar(text("SELECT data FROM events"))
    for bad in (
        b"not json",
        b'{"name": "pay", "config": [1]}',
        b'{"name": "Bad Name", "config": {}}',
        b'{"name": "pay", "config": {}, "owner": "x"}',
        b"[" * 10_000,
    ):
        response = pg_api.post("/config/update", headers=auth, content=bad)
        assert 400 <= response.status_code < 500, (bad[:40], response.text)
        assert "detail" in response.json()
    assert pg_api.events() == 1


def test_legacy_endpoints_need_credentials(pg_api: Api) -> None:
    assert pg_api.get("/config/get?service=pay").status_code == 401
    assert pg_api.post("/config/update", json={"name": "pay", "config": {}}).status_code == 401


@pytest.mark.slow
def test_readme_curl_examples_run_verbatim_against_the_embedded_server(tmp_path: Path) -> None:
    """Every curl of the original README, exactly as written (host and token filled in)."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    env = clean_env()
    assert cli("migrate", env=env, cwd=tmp_path).returncode == 0
    with running_server(tmp_path, env) as url:
        answers = []
        token = "<JWT_TOKEN>"
        for command in readme_curls():
            command = command.replace("http://localhost:8000", url)
            command = command.replace("<JWT_TOKEN>", token)
            result = subprocess.run(
                ["bash", "-c", command], capture_output=True, text=True, timeout=30
            )
            assert result.returncode == 0, (command, result.stderr)
            answers.append(json.loads(result.stdout))
            token = answers[-1].get("access_token", token)
        signed_up, logged_in, updated, fetched = answers
        assert signed_up["email"] == "user@email.com" and signed_up["role"] == "user"
        assert logged_in["token_type"] == "bearer"
        assert updated["status"] == "success" and updated["version"] == 1
        assert fetched == {
            "service": "payment-service",
            "environment": "default",
            "version": 1,
            "config": {"API_URL": "https://api.example.com", "TIMEOUT": 30},
        }
