"""The web console (/ui), used as a person uses it: Debian's Chromium driven by Playwright against
a real `configsync serve`, embedded (SQLite) and with PostgreSQL.

Screenshots of every page go to `.artifacts/console/` (or $CONFIGSYNC_ARTIFACTS); the README
shows two of them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    MASTER_KEY,
    PASSWORD,
    ROOT,
    TEST_SECRET,
    clean_env,
    cli,
    eventually,
    missing_service,
    running_server,
    scalar,
)

pytestmark = pytest.mark.slow

ARTIFACTS = Path(os.environ.get("CONFIGSYNC_ARTIFACTS", ROOT / ".artifacts")) / "console"
# As the machine's own check starts it: headless, and no calls home (this network is closed).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = os.environ.get("CONFIGSYNC_CHROMIUM") or shutil.which("chromium")
    if executable is None:
        missing_service("Chromium is not installed (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(params=["embedded", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A real server: its URL, and the environment its CLI commands need."""
    if request.param == "postgresql":
        request.getfixturevalue("pg")
        env = clean_env(DATABASE_URL=request.getfixturevalue("pg_url"), SECRET_KEY=TEST_SECRET)
    else:
        env = clean_env()
    env.update(CONFIGSYNC_MASTER_KEYS=MASTER_KEY, CONFIGSYNC_AUDIT_LOG=str(tmp_path / "a.log"))
    migrated = cli("migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    with running_server(tmp_path, env) as url:
        request.node.mode = request.param
        yield url, {**env, "_cwd": str(tmp_path)}


def account(server: tuple[str, dict[str, str]], email: str, role: str) -> None:
    env = dict(server[1])
    cwd = Path(env.pop("_cwd"))
    made = cli("users", "create", email, "--role", role, env=env, cwd=cwd, stdin=PASSWORD + "\n")
    assert made.returncode == 0, made.stderr


def token(url: str, email: str) -> dict[str, str]:
    answer = httpx.post(url + "/auth/login", json={"email": email, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


class Person:
    """One browser context (its own cookies), watching every request it makes."""

    def __init__(self, browser: Any, url: str, name: str, **context: Any) -> None:
        self.url, self.name = url, name
        context.setdefault("viewport", {"width": 1280, "height": 800})
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.requested: list[str] = []
        self.page.on("request", lambda r: self.requested.append(r.url))

    def go(self, path: str) -> Any:
        return self.page.goto(self.url + path)

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{self.name}-{name}.png"), full_page=True)

    def sign_in(self, email: str) -> None:
        self.go("/ui")  # not signed in: the sign-in form, which comes back here after
        self.page.fill("#login", email)
        self.page.fill("#password", PASSWORD)
        self.page.click("button[type=submit] >> text=Sign in")
        self.page.wait_for_url(self.url + "/ui")

    def error(self) -> str:
        return self.page.inner_text("#error")

    def other_hosts(self) -> list[str]:
        return [u for u in self.requested if not u.startswith(self.url + "/")]


def test_a_person_creates_edits_diffs_and_rolls_back_a_config(
    browser: Any, server: tuple[str, dict[str, str]], request: pytest.FixtureRequest
) -> None:
    url, _ = server
    me = Person(browser, url, request.node.mode)
    me.go("/ui/signup")
    me.shot("signup")
    me.page.fill("#email", "dev@example.com")
    me.page.fill("#password", PASSWORD)
    me.page.click("text=Create the account")
    me.page.wait_for_url(url + "/ui")
    assert "No configs yet" in me.page.inner_text("main")

    me.page.click("nav >> text=New config")
    me.page.fill("#service", "payments")
    me.page.fill("#environment", "prod")
    me.page.fill("#document", '{"db": {"host": "db1", "port": 5432}, "debug": false}')
    me.page.fill("#reason", "first")
    me.shot("new")
    me.page.click("button >> text=Create")
    me.page.wait_for_url(re.compile(r".*/ui/configs/payments/prod\?.*"))
    assert me.page.inner_text("#version") == "1"
    assert "db.host" in me.page.inner_text("#document-table")

    for version, document in (
        (2, '{"db": {"host": "db2", "port": 5432}, "debug": false}'),
        (3, '{"db": {"host": "db3", "port": 6432}, "timeout": 30}'),
    ):
        me.page.click("a.button >> text=Edit")
        me.page.fill("#document", document)
        me.page.fill("#reason", f"edit {version}")
        me.shot(f"edit-{version}")
        me.page.click("button >> text=Save")
        me.page.wait_for_url(re.compile(r".*notice=saved.*"))
        assert me.page.inner_text("#version") == str(version)
        assert f"Saved as version {version}" in me.page.inner_text("#notice")
    me.shot("config")

    me.page.click("nav >> text=History")
    timeline = me.page.inner_text("#timeline")
    assert re.findall(r"v\d+", timeline)[:3] == ["v3", "v2", "v1"]
    assert "edit 3" in timeline and "dev@example.com" in timeline
    me.shot("history")

    me.page.fill("#from", "1")
    me.page.fill("#to", "3")
    me.page.click("text=Show the diff")
    me.page.wait_for_url(re.compile(r".*/diff\?from=1&to=3"))
    added = me.page.eval_on_selector_all("#diff li.ins", "els => els.map(e => e.dataset.key)")
    removed = me.page.eval_on_selector_all("#diff li.del", "els => els.map(e => e.dataset.key)")
    assert sorted(added) == ["db.host", "db.port", "timeout"]
    assert sorted(removed) == ["db.host", "db.port", "debug"]
    # Coloured: additions and removals are told apart by their background.
    colours = {
        me.page.eval_on_selector(sel, "e => getComputedStyle(e).backgroundColor")
        for sel in ("#diff li.ins", "#diff li.del")
    }
    assert len(colours) == 2
    me.shot("diff")
    me.page.click("text=Side by side")
    assert "6432" in me.page.inner_text("#diff") and "5432" in me.page.inner_text("#diff")
    me.shot("diff-split")

    me.go("/ui/configs/payments/prod/history")
    me.page.click("li.action-created >> text=Roll back to this")
    assert "Roll back to version 1" in me.page.inner_text("h1")
    assert "timeout" in me.page.inner_text("#diff")  # the change it will make
    me.shot("rollback")
    me.page.click("button >> text=Roll back to version 1")  # no reason: the browser refuses
    assert "/rollback?to=1" in me.page.url
    me.page.fill("#reason", "db3 is down")
    me.page.click("button >> text=Roll back to version 1")
    me.page.wait_for_url(re.compile(r".*notice=rolled_back.*"))
    assert me.page.inner_text("#version") == "4"

    headers = token(url, "dev@example.com")
    newest = httpx.get(url + "/v1/configs/payments/prod/history", headers=headers).json()
    assert newest["items"][0]["version"] == 4
    assert newest["items"][0]["rollback_of"] == 1
    assert newest["items"][0]["reason"] == "db3 is down"
    current = httpx.get(url + "/v1/configs/payments/prod", headers=headers).json()
    assert current["data"] == {"db": {"host": "db1", "port": 5432}, "debug": False}
    assert me.other_hosts() == []


def test_an_auditor_sees_masked_secrets_and_no_controls_and_others_see_nothing(
    browser: Any, server: tuple[str, dict[str, str]], request: pytest.FixtureRequest
) -> None:
    url, _ = server
    httpx.post(url + "/auth/signup", json={"email": "own@example.com", "password": PASSWORD})
    owner = token(url, "own@example.com")
    written = httpx.put(
        url + "/v1/configs/billing/prod",
        headers=owner,
        json={"data": {"db": {"password": "hunter2-secret", "host": "h"}}},
    )
    assert written.status_code == 201, written.text
    declared = httpx.put(
        url + "/v1/services/billing/secrets", headers=owner, json={"paths": ["db.password"]}
    )
    assert declared.status_code == 200, declared.text
    httpx.patch(
        url + "/v1/configs/billing/prod", headers=owner, json={"data": {"db": {"host": "h2"}}}
    )
    account(server, "audit@example.com", "auditor")
    auditor = token(url, "audit@example.com")
    api_view = httpx.get(url + "/v1/configs/billing/prod", headers=auditor).json()
    fingerprint = api_view["data"]["db"]["password"]["fingerprint"]

    who = Person(browser, url, f"{request.node.mode}-auditor")
    who.sign_in("audit@example.com")
    who.go("/ui/configs/billing/prod")
    table = who.page.inner_text("#document-table")
    assert "hunter2" not in who.page.content()
    assert f"secret {fingerprint[:12]}" in table  # masked exactly as the API masks it
    for control in ("text=Edit", "#reveal", "text=API keys"):
        assert who.page.locator(control).count() == 0, control
    who.shot("config")
    who.go("/ui/configs/billing/prod/history")
    assert who.page.locator("text=Roll back to this").count() == 0
    who.go("/ui/configs/billing/prod/edit")
    assert "auditors read; they cannot write" in who.error()
    who.go("/ui/log")
    assert "Verified" in who.page.inner_text("#chain")
    who.shot("log")

    # The owner reveals: the values show, and the audit log records it.
    me = Person(browser, url, f"{request.node.mode}-owner")
    me.sign_in("own@example.com")
    me.go("/ui/configs/billing/prod")
    assert "hunter2" not in me.page.content()
    me.page.click("#reveal")
    assert "hunter2-secret" in me.page.inner_text("#document-table")
    who.go("/ui/audit?action=revealed")
    assert "own@example.com" in who.page.inner_text("#audit")
    who.shot("audit")

    # Another person: the config does not exist for them, and is not listed.
    account(server, "other@example.com", "user")
    other = Person(browser, url, f"{request.node.mode}-other")
    other.sign_in("other@example.com")
    assert other.page.locator("text=billing").count() == 0
    answer = other.go("/ui/configs/billing/prod")
    assert answer.status == 404
    assert "not found" in other.error()
    other.go("/ui/configs/billing/prod/history")
    assert "not found" in other.error()
    for person in (who, me, other):
        assert person.other_hosts() == []


def test_a_stale_edit_shows_the_conflict_and_keeps_the_text(
    browser: Any, server: tuple[str, dict[str, str]], request: pytest.FixtureRequest
) -> None:
    url, _ = server
    httpx.post(url + "/auth/signup", json={"email": "dev@example.com", "password": PASSWORD})
    api = token(url, "dev@example.com")
    httpx.put(url + "/v1/configs/web/prod", headers=api, json={"data": {"a": 1}})
    me = Person(browser, url, f"{request.node.mode}-stale")
    me.sign_in("dev@example.com")
    me.go("/ui/configs/web/prod/edit")
    me.page.fill("#document", '{"a": 2}')
    # Someone else writes while the editor is open.
    httpx.put(url + "/v1/configs/web/prod", headers=api, json={"data": {"a": 3}})
    me.page.click("button >> text=Save")
    assert "version 2 was written after you opened the editor at version 1" in me.error()
    assert me.page.input_value("#document") == '{"a": 2}'
    assert "Current version: 2" in me.page.inner_text("#conflict")
    me.shot("conflict")
    current = httpx.get(url + "/v1/configs/web/prod", headers=api).json()
    assert current["version"] == 2 and current["data"] == {"a": 3}  # nothing overwritten

    # Invalid JSON is caught in the page before anything is sent.
    me.go("/ui/configs/web/prod/edit")
    me.page.fill("#document", '{"a": ')
    before = len(me.requested)
    me.page.click("button >> text=Save")
    assert "not valid JSON" in me.page.inner_text("#document-error")
    assert len(me.requested) == before


def test_keyboard_and_phone_width(
    browser: Any, server: tuple[str, dict[str, str]], request: pytest.FixtureRequest
) -> None:
    url, _ = server
    httpx.post(url + "/auth/signup", json={"email": "dev@example.com", "password": PASSWORD})
    api = token(url, "dev@example.com")
    httpx.put(
        url + "/v1/configs/a-rather-long-service-name/production",
        headers=api,
        json={"data": {"feature": {"flags": {"long": "x" * 120}}}},
    )
    me = Person(
        browser,
        url,
        f"{request.node.mode}-phone",
        viewport={"width": 390, "height": 844},
        is_mobile=True,
    )
    me.go("/ui/login")
    # By keyboard alone: the field has focus, Tab moves on, Enter submits. Chromium applies
    # `autofocus` at its next rendering update, which can come after the load event on a busy
    # machine: wait for the focus a person would see before typing, as they would.
    from playwright.sync_api import expect

    expect(me.page.locator("#login")).to_be_focused()
    me.page.keyboard.type("dev@example.com")
    me.page.keyboard.press("Tab")
    me.page.keyboard.type(PASSWORD)
    me.page.keyboard.press("Enter")
    me.page.wait_for_url(url + "/ui")
    for path in ("/ui", "/ui/configs/a-rather-long-service-name/production"):
        me.go(path)
        overflow = me.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path} is {overflow}px wider than a phone's screen"
    me.shot("config")


# --- without a browser: the session cookie and CSRF --------------------------------------------


def csrf_of(client: httpx.Client, path: str = "/ui/login") -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert found is not None
    return found.group(1)


def test_forms_without_the_csrf_token_are_refused_and_change_nothing(pg_api: Any) -> None:
    client = pg_api.client
    client.post("/auth/signup", json={"email": "dev@example.com", "password": PASSWORD})
    token_ = csrf_of(client)
    signed = client.post(
        "/ui/login",
        data={"csrf": token_, "login": "dev@example.com", "password": PASSWORD},
        follow_redirects=False,
    )
    assert signed.status_code == 303
    fresh = csrf_of(client, "/ui")
    assert fresh != token_  # a new token once signed in
    form = {"service": "pay", "environment": "prod", "document": '{"a": 1}'}
    for sent in ({}, {"csrf": "forged"}, {"csrf": token_}):
        refused = client.post("/ui/new", data={**form, **sent}, follow_redirects=False)
        assert refused.status_code == 403, sent
        assert "CSRF" in refused.text
    assert client.get("/ui/configs/pay/prod").status_code == 404  # nothing was written
    made = client.post("/ui/new", data={**form, "csrf": fresh}, follow_redirects=False)
    assert made.status_code == 303
    assert client.get("/ui/configs/pay/prod").status_code == 200


def test_the_session_cookie_is_httponly_strict_and_secure_behind_https(pg_api: Any) -> None:
    from fastapi.testclient import TestClient

    pg_api.client.post("/auth/signup", json={"email": "dev@example.com", "password": PASSWORD})
    # The app is running already (pg_api): a second client over HTTPS, without a second start.
    client = TestClient(pg_api.client.app, base_url="https://console.example")
    token_ = csrf_of(client)
    signed = client.post(
        "/ui/login",
        data={"csrf": token_, "login": "dev@example.com", "password": PASSWORD},
        follow_redirects=False,
    )
    cookies = {c.split("=", 1)[0]: c for c in signed.headers.get_list("set-cookie")}
    session = cookies["configsync_session"].lower()
    for attribute in ("httponly", "samesite=strict", "secure", "path=/ui"):
        assert attribute in session, attribute
    assert "secure" in cookies["configsync_csrf"].lower()
    page = client.get("/ui")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY"
    # Logging out revokes the token itself, not only the cookie.
    stolen = client.cookies.get("configsync_session")
    client.post("/ui/logout", data={"csrf": csrf_of(client, "/ui")})
    replay = client.get("/v1/me", headers={"Authorization": f"Bearer {stolen}"})
    assert replay.status_code == 401
    plain = pg_api.client  # over plain HTTP (development) the cookie cannot be Secure
    token_ = csrf_of(plain)
    signed = plain.post(
        "/ui/login",
        data={"csrf": token_, "login": "dev@example.com", "password": PASSWORD},
        follow_redirects=False,
    )
    session_cookie = next(
        c for c in signed.headers.get_list("set-cookie") if c.startswith("configsync_session")
    )
    assert "secure" not in session_cookie.lower()


def test_sign_in_redirects_only_inside_the_console(pg_api: Any) -> None:
    client = pg_api.client
    client.post("/auth/signup", json={"email": "dev@example.com", "password": PASSWORD})
    away = client.get("/ui/audit?service=x", follow_redirects=False)
    assert away.headers["location"] == "/ui/login?next=%2Fui%2Faudit%3Fservice%3Dx"
    for target, landing in (
        ("https://evil.example/", "/ui"),
        ("//evil.example", "/ui"),
        ("/ui/new", "/ui/new"),
    ):
        signed = client.post(
            "/ui/login",
            data={
                "csrf": csrf_of(client),
                "login": "dev@example.com",
                "password": PASSWORD,
                "next": target,
            },
            follow_redirects=False,
        )
        assert signed.headers["location"] == landing
    wrong = client.post(
        "/ui/login",
        data={"csrf": csrf_of(client), "login": "dev@example.com", "password": "nope-nope"},
    )
    assert wrong.status_code == 401 and "incorrect email or password" in wrong.text


def as_person(api: Any, headers: dict[str, str]) -> Any:
    """A console client signed in as the person whose bearer token `headers` carries."""
    from fastapi.testclient import TestClient

    client = TestClient(api.client.app)  # the app runs already (api): no second start
    client.cookies.set("configsync_session", headers["Authorization"].split()[1])
    return client


def submit(client: Any, path: str, **data: Any) -> Any:
    return client.post(path, data={"csrf": csrf_of(client, "/ui"), **data}, follow_redirects=False)


def test_an_edit_keeps_a_secret_left_masked_and_seals_a_new_one(pg_api: Any) -> None:
    owner = pg_api.person("own@example.com")
    pg_api.put("/v1/configs/pay/prod", headers=owner, json={"data": {"pw": "s3cret", "n": 1}})
    pg_api.put("/v1/services/pay/secrets", headers=owner, json={"paths": ["pw"]})
    pg_api.patch("/v1/configs/pay/prod", headers=owner, json={"data": {"n": 2}})  # sealed now
    console = as_person(pg_api, owner)
    editor = console.get("/ui/configs/pay/prod/edit").text
    assert "s3cret" not in editor and "&#34;masked&#34;: true" in editor
    masked_pw = pg_api.get(
        "/v1/configs/pay/prod?format=raw", headers=pg_api.person("a@x.io", "auditor")
    ).json()["pw"]
    saved = submit(
        console,
        "/ui/configs/pay/prod/edit",
        document=json.dumps({"pw": masked_pw, "n": 3}),
        expected_version="2",
    )
    assert saved.status_code == 303, saved.text
    current = pg_api.get("/v1/configs/pay/prod", headers=owner).json()
    assert current["version"] == 3 and current["data"] == {"pw": "s3cret", "n": 3}
    submit(
        console,
        "/ui/configs/pay/prod/edit",
        document=json.dumps({"pw": "n3w", "n": 3}),
        expected_version="3",
    )
    current = pg_api.get("/v1/configs/pay/prod", headers=owner).json()
    assert current["data"] == {"pw": "n3w", "n": 3}
    stored = scalar(pg_api.engine, "SELECT data FROM events ORDER BY position DESC LIMIT 1")
    assert "n3w" not in str(stored)  # sealed as the API seals it
    wrong = submit(console, "/ui/configs/pay/prod/edit", document="[1]", expected_version="4")
    assert wrong.status_code == 422 and "must be a JSON object" in wrong.text


def test_api_keys_show_once_revoke_and_readers_behind(pg_api: Any) -> None:
    owner = pg_api.person("own@example.com")
    pg_api.put("/v1/configs/pay/prod", headers=owner, json={"data": {"a": 1}})
    console = as_person(pg_api, owner)
    made = submit(
        console, "/ui/services/pay/keys", name="web", environment="prod", permission="read"
    )
    key = re.search(r'id="key-value">([^<]+)<', made.text)
    assert made.status_code == 200 and key is not None
    assert key.group(1) not in console.get("/ui/services/pay/keys").text  # shown once
    read = pg_api.get("/v1/configs/pay/prod", headers={"X-API-Key": key.group(1)})
    assert read.status_code == 200
    readers = console.get("/ui/configs/pay/prod/clients").text
    assert "web" in readers and "behind" not in readers.split("<tbody>")[1]
    pg_api.put("/v1/configs/pay/prod", headers=owner, json={"data": {"a": 2}})
    assert "behind" in console.get("/ui/configs/pay/prod/clients").text.split("<tbody>")[1]
    key_id = re.search(r"/keys/([^/]+)/revoke", console.get("/ui/services/pay/keys").text)
    assert key_id is not None
    submit(console, f"/ui/services/pay/keys/{key_id.group(1)}/revoke")
    refused = pg_api.get("/v1/configs/pay/prod", headers={"X-API-Key": key.group(1)})
    assert refused.status_code == 401
    stranger = as_person(pg_api, pg_api.person("other@example.com"))
    assert stranger.get("/ui/services/pay/keys").status_code == 404
    bad = submit(console, "/ui/services/pay/keys", name="x", permission="admin")
    assert bad.status_code == 422 and "permission is read or write" in bad.text


def test_compare_environments_and_promote_chosen_keys(pg_api: Any) -> None:
    owner = pg_api.person("own@example.com")
    pg_api.put("/v1/configs/pay/dev", headers=owner, json={"data": {"a": 1, "b": 2, "c": 3}})
    pg_api.put("/v1/configs/pay/prod", headers=owner, json={"data": {"a": 0, "z": 9}})
    console = as_person(pg_api, owner)
    page_ = console.get("/ui/services/pay/compare?from_env=dev&to_env=prod").text
    assert re.findall(r'name="keys" value="([^"]+)"', page_) == ["a", "b", "c"]
    done = submit(
        console,
        "/ui/services/pay/promote",
        from_env="dev",
        to_env="prod",
        keys=["b"],
        expected_version="1",
        reason="ship b",
    )
    assert done.status_code == 303, done.text
    prod = pg_api.get("/v1/configs/pay/prod", headers=owner).json()
    assert prod["data"] == {"a": 0, "b": 2, "z": 9}
    newest = pg_api.get("/v1/configs/pay/prod/history", headers=owner).json()["items"][0]
    assert newest["promoted_from"] == {"environment": "dev", "version": 1}
    stale = submit(
        console,
        "/ui/services/pay/promote",
        from_env="dev",
        to_env="prod",
        keys=["c"],
        expected_version="1",
    )
    assert stale.status_code == 412  # prod moved on: nothing promoted over it
    assert "c" not in pg_api.get("/v1/configs/pay/prod", headers=owner).json()["data"]


def test_audit_log_filters_export_and_the_chain_page(pg_api: Any) -> None:
    owner = pg_api.person("own@example.com")
    for service in ("pay", "web", "pay"):
        pg_api.patch(f"/v1/configs/{service}/prod", headers=owner, json={"data": {"x": 1}})
    admin = as_person(pg_api, pg_api.person("root@example.com", "admin"))
    assert as_person(pg_api, owner).get("/ui/audit").status_code == 403

    def rows() -> list[str]:
        return re.findall(r"<td>(\w+)/prod</td>", admin.get("/ui/audit?service=pay").text)

    assert eventually(lambda: len(rows()) == 1), rows()  # the second patch changed nothing
    assert set(rows()) == {"pay"}
    exported = admin.get("/ui/audit/export?format=csv&service=web")
    lines = exported.text.strip().splitlines()
    assert lines[0].startswith("position,") and len(lines) == 2 and ",web," in lines[1]
    assert exported.headers["x-export-rows"] == "1"
    assert "Verified" in admin.get("/ui/log").text
    signed = pg_api.post("/v1/log/checkpoint", headers=pg_api.person("r2@example.com", "admin"))
    assert signed.status_code == 200, signed.text
    chain = admin.get("/ui/log").text
    assert f"Tree size {signed.json()['tree_size']}" in chain
    assert all(line in chain for line in signed.json()["note"].splitlines())


def test_a_deleted_config_opens_on_its_history_and_a_rollback_restores_it(pg_api: Any) -> None:
    owner = pg_api.person("own@example.com")
    pg_api.put("/v1/configs/pay/prod", headers=owner, json={"data": {"a": 1}})
    pg_api.request("DELETE", "/v1/configs/pay/prod", headers=owner)
    console = as_person(pg_api, owner)
    opened = console.get("/ui/configs/pay/prod", follow_redirects=False)
    assert opened.status_code == 303
    assert opened.headers["location"] == "/ui/configs/pay/prod/history?notice=deleted"
    history = console.get(opened.headers["location"]).text
    assert "history is kept" in history and "deleted" in history
    assert "/rollback?to=1" in history
    confirm = console.get("/ui/configs/pay/prod/rollback?to=1").text
    assert 'name="expected_version" value="2"' in confirm
    done = submit(
        console, "/ui/configs/pay/prod/rollback", to="1", reason="undo", expected_version="2"
    )
    assert done.status_code == 303, done.text
    assert pg_api.get("/v1/configs/pay/prod", headers=owner).json()["data"] == {"a": 1}
    # A service whose every config is deleted has nothing to compare: not found, not a 500.
    pg_api.request("DELETE", "/v1/configs/pay/prod", headers=owner)
    assert console.get("/ui/services/pay/compare").status_code == 404
    # Someone who may not read it is told it does not exist, deleted or not.
    stranger = as_person(pg_api, pg_api.person("other@example.com"))
    assert stranger.get("/ui/configs/pay/prod", follow_redirects=False).status_code == 404


def test_sign_up_checks_the_address_as_the_api_does(pg_api: Any) -> None:
    refused = pg_api.post(
        "/ui/signup",
        data={
            "csrf": csrf_of(pg_api.client, "/ui/signup"),
            "email": "not-an-address",
            "password": PASSWORD,
        },
    )
    assert refused.status_code == 422 and "email" in refused.text.lower()
    assert pg_api.post(
        "/auth/login", json={"email": "not-an-address", "password": PASSWORD}
    ).status_code in (401, 422)


def test_the_list_searches_by_name_and_by_key_and_the_history_pages(pg_api: Any) -> None:
    owner = pg_api.person("own@example.com")
    for service, environment, data in (
        ("payments", "prod", {"db": {"host": "a"}}),
        ("payments", "staging", {"db": {"port": 1}}),
        ("search", "prod", {"db": {"host": "b"}}),
    ):
        pg_api.put(f"/v1/configs/{service}/{environment}", headers=owner, json={"data": data})
    console = as_person(pg_api, owner)

    def listed(query: str) -> list[str]:
        return re.findall(r'href="/ui/configs/([^"]+)"', console.get(f"/ui?{query}").text)

    assert listed("") == ["payments/prod", "payments/staging", "search/prod"]
    assert listed("q=payments") == ["payments/prod", "payments/staging"]
    assert listed("q=prod") == ["payments/prod", "search/prod"]
    assert listed("key=db.host") == ["payments/prod", "search/prod"]
    assert listed("q=payments&key=db.host") == ["payments/prod"]
    assert listed("key=nothing.here") == []
    bad = console.get("/ui?key=" + "a" * 501)
    assert bad.status_code == 422  # a clear refusal, not a 500

    for n in range(24):
        pg_api.patch("/v1/configs/search/prod", headers=owner, json={"data": {"n": n}})
    first = console.get("/ui/configs/search/prod/history").text
    assert re.findall(r"<strong>v(\d+)</strong>", first) == [str(v) for v in range(25, 5, -1)]
    older = re.search(r'href="\?before_version=(\d+)"', first)
    assert older is not None
    rest = console.get(f"/ui/configs/search/prod/history?before_version={older.group(1)}").text
    assert re.findall(r"<strong>v(\d+)</strong>", rest) == ["5", "4", "3", "2", "1"]
    assert "before_version" not in rest
