"""Who may do what, over HTTP on PostgreSQL: the authorization matrix, tokens, people, keys."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from jose import jwt
from sqlalchemy import Engine, text

from tests.conftest import (
    PASSWORD,
    TEST_SECRET,
    Api,
    clean_env,
    cli,
    eventually,
    make_api,
    scalar,
)

URL = "/v1/configs/pay/prod"


@dataclass
class World:
    api: Api
    callers: dict[str, dict[str, str]]
    owner_id: str


@pytest.fixture
def world(pg_api: Api) -> World:
    """pay/prod owned by owner@; web/prod owned by other@; keys of every kind for pay."""
    api = pg_api
    owner = api.person("owner@example.com")
    other = api.person("other@example.com")
    api.put(URL, headers=owner, json={"data": {"A": 1}})
    api.put("/v1/configs/web/prod", headers=other, json={"data": {"W": 1}})
    revoked = api.post(
        "/v1/api-keys", headers=owner, json={"name": "r", "service": "pay", "permission": "write"}
    )
    api.delete(f"/v1/api-keys/{revoked.json()['id']}", headers=owner)
    expired = api.post(
        "/v1/api-keys",
        headers=owner,
        json={"name": "e", "service": "pay", "permission": "write", "expires_in_days": 1},
    )
    with api.engine.begin() as conn:
        conn.execute(
            text("UPDATE api_keys SET expires_at = :t WHERE id = :i"),
            {"t": datetime.now(UTC) - timedelta(minutes=1), "i": expired.json()["id"]},
        )
    callers = {
        "admin": api.person("admin@example.com", role="admin"),
        "owner": owner,
        "other user": other,
        "auditor": api.person("auditor@example.com", role="auditor"),
        "read key": {"X-API-Key": api.key(owner, "pay", "read")},
        "write key": {"X-API-Key": api.key(owner, "pay", "write")},
        "key of another service": {"X-API-Key": api.key(other, "web", "write")},
        "revoked key": {"X-API-Key": revoked.json()["key"]},
        "expired key": {"Authorization": f"Bearer {expired.json()['key']}"},
        "no credentials": {},
    }
    owner_id = api.get("/v1/me", headers=owner).json()["id"]
    return World(api, callers, owner_id)


def _get(w: World, h: dict[str, str]) -> Any:
    return w.api.get(URL, headers=h)


def _put(w: World, h: dict[str, str]) -> Any:
    return w.api.put(URL, headers=h, json={"data": {"A": 2}})


def _delete(w: World, h: dict[str, str]) -> Any:
    return w.api.delete(URL, headers=h)


def _create_key(w: World, h: dict[str, str]) -> Any:
    return w.api.post(
        "/v1/api-keys", headers=h, json={"name": "n", "service": "pay", "permission": "read"}
    )


def _list_keys(w: World, h: dict[str, str]) -> Any:
    return w.api.get("/v1/api-keys", headers=h)


ACTIONS: dict[str, Callable[[World, dict[str, str]], Any]] = {
    "GET": _get,
    "PUT": _put,
    "DELETE": _delete,
    "create key": _create_key,
    "list keys": _list_keys,
}

# caller: (GET, PUT, DELETE, create key, list keys)
MATRIX = {
    "admin": (200, 200, 200, 201, 200),
    "owner": (200, 200, 200, 201, 200),
    "other user": (404, 404, 404, 404, 200),
    "auditor": (200, 403, 403, 403, 403),
    "read key": (200, 403, 403, 403, 403),
    "write key": (200, 200, 200, 403, 403),
    "key of another service": (404, 404, 404, 404, 403),
    "revoked key": (401, 401, 401, 401, 401),
    "expired key": (401, 401, 401, 401, 401),
    "no credentials": (401, 401, 401, 401, 401),
}
CELLS = [
    pytest.param(caller, action, statuses[i], id=f"{caller}-{action}")
    for caller, statuses in MATRIX.items()
    for i, action in enumerate(ACTIONS)
]


@pytest.mark.parametrize(("caller", "action", "status"), CELLS)
def test_authorization_matrix(world: World, caller: str, action: str, status: int) -> None:
    before = world.api.events()
    response = ACTIONS[action](world, world.callers[caller])
    assert response.status_code == status, response.text
    assert "detail" in response.json() if status >= 400 else True
    if action in ("PUT", "DELETE"):
        assert world.api.events() == before + (1 if status == 200 else 0)


def test_another_users_service_looks_exactly_like_a_missing_one(world: World) -> None:
    other = world.callers["other user"]
    hidden = world.api.get(URL, headers=other)
    missing = world.api.get("/v1/configs/nothing-here/prod", headers=other)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["detail"].replace("pay", "X") == missing.json()["detail"].replace(
        "nothing-here", "X"
    )
    world.api.delete(URL, headers=world.callers["owner"])
    deleted = world.api.get(URL, headers=other)
    assert deleted.status_code == 404 and "deleted_at_version" not in deleted.json()


def test_a_new_service_belongs_to_its_first_writer(world: World) -> None:
    other = world.callers["other user"]
    assert (
        world.api.put("/v1/configs/fresh/prod", headers=other, json={"data": {}}).status_code == 201
    )
    assert (
        world.api.get("/v1/configs/fresh/prod", headers=world.callers["owner"]).status_code == 404
    )
    assert (
        world.api.put("/v1/configs/fresh/staging", headers=other, json={"data": {}}).status_code
        == 201
    )
    assert (
        world.api.put(
            "/v1/configs/new2/prod", headers=world.callers["auditor"], json={"data": {}}
        ).status_code
        == 403
    )
    assert (
        world.api.put(
            "/v1/configs/new3/prod", headers=world.callers["write key"], json={"data": {}}
        ).status_code
        == 404
    )


def test_an_environment_scoped_key_reads_only_its_environment(world: World) -> None:
    owner = world.callers["owner"]
    world.api.put("/v1/configs/pay/staging", headers=owner, json={"data": {"S": 1}})
    staging = {"X-API-Key": world.api.key(owner, "pay", "write", environment="staging")}
    assert world.api.get("/v1/configs/pay/staging", headers=staging).status_code == 200
    assert world.api.get(URL, headers=staging).status_code == 404
    assert world.api.put(URL, headers=staging, json={"data": {}}).status_code == 404


def test_keys_are_shown_once_and_stored_hashed(world: World) -> None:
    owner = world.callers["owner"]
    created = world.api.post(
        "/v1/api-keys", headers=owner, json={"name": "ci", "service": "pay", "permission": "read"}
    )
    body = created.json()
    assert body["key"].startswith("cs_") and len(body["key"]) >= 3 + 32
    assert body["key"].startswith(body["prefix"]) and len(body["prefix"]) < 16
    listed = world.api.get("/v1/api-keys", headers=owner).json()
    assert body["id"] in {k["id"] for k in listed}
    assert all("key" not in k for k in listed)
    assert body["key"] not in json.dumps(listed)
    with world.api.engine.connect() as conn:
        stored = conn.execute(
            text("SELECT key_hash, prefix FROM api_keys WHERE id = :i"), {"i": body["id"]}
        ).one()
    assert stored.key_hash != body["key"] and len(stored.key_hash) == 64
    other_list = world.api.get("/v1/api-keys", headers=world.callers["other user"]).json()
    assert body["id"] not in {k["id"] for k in other_list}
    revoke = world.api.delete(f"/v1/api-keys/{body['id']}", headers=world.callers["other user"])
    assert revoke.status_code == 404


def test_keys_in_either_header_and_me(world: World) -> None:
    key = world.callers["read key"]["X-API-Key"]
    assert world.api.get(URL, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    me = world.api.get("/v1/me", headers={"X-API-Key": key}).json()
    assert me["kind"] == "api_key" and me["service"] == "pay" and me["permission"] == "read"
    person = world.api.get("/v1/me", headers=world.callers["auditor"]).json()
    assert person["email"] == "auditor@example.com" and person["role"] == "auditor"
    assert "password_hash" not in person


# --- tokens ---------------------------------------------------------------------------------


def _b64(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def test_jwt_failures_are_401(world: World) -> None:
    user_id = world.owner_id
    now = datetime.now(UTC)
    claims = {
        "sub": user_id,
        "role": "admin",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(hours=1)).timestamp()),
    }
    good = world.callers["owner"]["Authorization"].split(" ", 1)[1]
    header, payload, signature = good.split(".")
    forged_payload = _b64({**json.loads(base64.urlsafe_b64decode(payload + "==")), "role": "admin"})
    tokens = {
        "expired": jwt.encode(
            {**claims, "exp": int((now - timedelta(minutes=1)).timestamp())},
            TEST_SECRET,
            algorithm="HS256",
        ),
        "tampered": f"{header}.{forged_payload}.{signature}",
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
        "other secret": jwt.encode(
            claims, "another-secret-that-is-long-enough-012345", algorithm="HS256"
        ),
        "HS512 with our secret": jwt.encode(claims, TEST_SECRET, algorithm="HS512"),
        "no exp": jwt.encode(
            {"sub": user_id, "role": "user", "iat": claims["iat"]}, TEST_SECRET, algorithm="HS256"
        ),
        "garbage": "not-a-token",
    }
    for name, token in tokens.items():
        response = world.api.get(URL, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, name
        assert response.headers.get("www-authenticate") == "Bearer"
    assert world.api.get(URL, headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 401


def test_a_token_that_worked_is_refused_from_the_second_after_it_expires(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token's signature is verified once and kept; its expiry is still checked at every use,
    on the second as python-jose checks it."""
    from configsync.auth import tokens

    owner = world.callers["owner"]
    assert world.api.get(URL, headers=owner).status_code == 200  # verified, and kept
    expires = jwt.get_unverified_claims(owner["Authorization"].split(" ", 1)[1])["exp"]
    monkeypatch.setattr(tokens, "time", SimpleNamespace(time=lambda: expires + 0.999))
    assert world.api.get(URL, headers=owner).status_code == 200  # its last second
    monkeypatch.setattr(tokens, "time", SimpleNamespace(time=lambda: expires + 1))
    refused = world.api.get(URL, headers=owner)
    assert refused.status_code == 401 and refused.json()["detail"] == "invalid or expired token"
    assert world.api.put(URL, headers=owner, json={"data": {"A": 1}}).status_code == 401


def test_a_deactivated_users_token_stops_working_and_a_role_change_applies_at_once(
    world: World,
) -> None:
    admin, owner = world.callers["admin"], world.callers["owner"]
    assert world.api.get(URL, headers=owner).status_code == 200
    off = world.api.patch(f"/v1/users/{world.owner_id}", headers=admin, json={"is_active": False})
    assert off.status_code == 200 and off.json()["is_active"] is False
    assert world.api.get(URL, headers=owner).status_code == 401
    assert (
        world.api.post(
            "/auth/login", json={"email": "owner@example.com", "password": PASSWORD}
        ).status_code
        == 401
    )
    world.api.patch(
        f"/v1/users/{world.owner_id}", headers=admin, json={"is_active": True, "role": "auditor"}
    )
    assert world.api.put(URL, headers=owner, json={"data": {}}).status_code == 403


def test_user_administration_is_for_admins(world: World) -> None:
    admin, owner = world.callers["admin"], world.callers["owner"]
    users = world.api.get("/v1/users", headers=admin)
    assert users.status_code == 200
    assert {u["email"] for u in users.json()} >= {"owner@example.com", "admin@example.com"}
    assert world.api.get("/v1/users", headers=owner).status_code == 403
    assert (
        world.api.patch(
            f"/v1/users/{world.owner_id}", headers=owner, json={"role": "admin"}
        ).status_code
        == 403
    )
    assert (
        world.api.patch(
            f"/v1/users/{world.owner_id}", headers=admin, json={"role": "root"}
        ).status_code
        == 422
    )
    assert (
        world.api.patch(
            f"/v1/users/{world.owner_id}", headers=admin, json={"email": "x@y.z"}
        ).status_code
        == 422
    )
    assert (
        world.api.patch("/v1/users/nobody", headers=admin, json={"role": "user"}).status_code == 404
    )
    admin_id = world.api.get("/v1/me", headers=admin).json()["id"]
    assert (
        world.api.patch(f"/v1/users/{admin_id}", headers=admin, json={"role": "user"}).status_code
        == 403
    )


# --- people -----------------------------------------------------------------------------------


def test_signup_rules(pg_api: Api) -> None:
    ok = pg_api.post("/auth/signup", json={"email": "  New.User@Example.COM ", "password": "x" * 8})
    assert ok.status_code == 201 and ok.json()["email"] == "new.user@example.com"
    assert ok.json()["role"] == "user"
    cases = [
        ({"email": "new.user@example.com", "password": PASSWORD}, 409),
        ({"email": "NEW.USER@example.com", "password": PASSWORD}, 409),
        ({"email": "short@example.com", "password": "x" * 7}, 422),
        ({"email": "long@example.com", "password": "é" * 37}, 422),  # 74 bytes
        ({"email": "admin@example.com", "password": PASSWORD, "role": "admin"}, 422),
        ({"email": "not-an-email", "password": PASSWORD}, 422),
        ({"email": "nopass@example.com"}, 422),
    ]
    for body, status in cases:
        response = pg_api.post("/auth/signup", json=body)
        assert response.status_code == status, (body, response.text)
        assert "detail" in response.json()
    assert (
        pg_api.post(
            "/auth/signup", json={"email": "ok72@example.com", "password": "x" * 72}
        ).status_code
        == 201
    )
    with pg_api.engine.connect() as conn:
        roles = conn.execute(text("SELECT DISTINCT role FROM users")).scalars().all()
        stored = conn.scalar(
            text("SELECT password_hash FROM users WHERE email = 'ok72@example.com'")
        )
    assert roles == ["user"]
    assert stored.startswith("$argon2") and "x" * 72 not in stored


def test_login_with_json_or_the_oauth2_form(pg_api: Api) -> None:
    pg_api.signup("form@example.com")
    form = pg_api.post("/auth/login", data={"username": "Form@Example.com", "password": PASSWORD})
    assert form.status_code == 200 and form.json()["token_type"] == "bearer"
    token = form.json()["access_token"]
    assert (
        pg_api.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).json()["email"]
        == "form@example.com"
    )
    decoded = jwt.decode(token, TEST_SECRET, algorithms=["HS256"])
    assert set(decoded) >= {"sub", "role", "exp", "iat", "jti"}
    assert (
        pg_api.post(
            "/auth/login", json={"email": "form@example.com", "password": "wrong-pass"}
        ).status_code
        == 401
    )
    assert (
        pg_api.post(
            "/auth/login", json={"email": "ghost@example.com", "password": PASSWORD}
        ).status_code
        == 401
    )
    assert pg_api.post("/auth/login", data={"username": "form@example.com"}).status_code == 422
    assert (
        pg_api.post(
            "/auth/login", content=b"{", headers={"Content-Type": "application/json"}
        ).status_code
        == 422
    )


def test_create_admin_from_the_command_line(pg_api: Api) -> None:
    env = clean_env(DATABASE_URL=pg_api.url)
    made = cli("create-admin", "Boss@Example.com", env=env, stdin="a-strong-password\n")
    assert made.returncode == 0, made.stderr
    assert "created admin boss@example.com" in made.stdout
    token = pg_api.token("boss@example.com", "a-strong-password")
    assert pg_api.get("/v1/users", headers=token).status_code == 200

    pg_api.signup("promote@example.com")
    promoted = cli("create-admin", "promote@example.com", env=env, stdin="ignored-password\n")
    assert promoted.returncode == 0 and "promoted" in promoted.stdout
    assert (
        pg_api.get("/v1/me", headers=pg_api.token("promote@example.com")).json()["role"] == "admin"
    )

    refused = cli("create-admin", "weak@example.com", env=env, stdin="short\n")
    assert refused.returncode == 1 and "password must be" in refused.stderr


def test_the_legacy_api_key_reads_every_service_and_has_no_default(pg: Any, pg_url: str) -> None:
    from tests.conftest import make_api

    with_key = make_api(pg_url, pg, legacy_api_key="legacy-key-set-by-the-operator")
    api = next(with_key)
    owner = api.person("owner@example.com")
    api.put(URL, headers=owner, json={"data": {"A": 1}})
    legacy = {"X-API-Key": "legacy-key-set-by-the-operator"}
    assert api.get(URL, headers=legacy).status_code == 200
    assert api.get("/config/get?service=pay&environment=prod", headers=legacy).status_code == 200
    assert api.put(URL, headers=legacy, json={"data": {}}).status_code == 403
    with pytest.raises(StopIteration):
        next(with_key)

    without = make_api(pg_url, pg)
    api = next(without)
    for guess in ("supersecretkey", "legacy-key-set-by-the-operator"):
        assert api.get(URL, headers={"X-API-Key": guess}).status_code == 401
    with pytest.raises(StopIteration):
        next(without)


def test_closed_sign_up_refuses_and_admins_create_accounts(pg: Engine, pg_url: str) -> None:
    generator = make_api(pg_url, pg, signup="closed")
    api = next(generator)
    try:
        refused = api.post("/auth/signup", json={"email": "new@example.com", "password": PASSWORD})
        assert refused.status_code == 403 and "closed" in refused.json()["detail"]
        assert scalar(pg, "SELECT count(*) FROM users") == 0
        admin = api.person("admin@example.com", role="admin")
        user = api.person("user@example.com")
        body = {"email": "New@Example.com", "password": PASSWORD, "role": "auditor"}
        assert api.post("/v1/users", headers=user, json=body).status_code == 403
        created = api.post("/v1/users", headers=admin, json=body)
        assert created.status_code == 201, created.text
        assert created.json()["email"] == "new@example.com"
        assert created.json()["role"] == "auditor"
        assert api.token("new@example.com")  # the new account logs in
        assert api.post("/v1/users", headers=admin, json=body).status_code == 409
        bad = api.post("/v1/users", headers=admin, json={**body, "email": "x@e.com", "role": "god"})
        assert bad.status_code == 422
    finally:
        generator.close()


def test_users_create_makes_an_account_from_the_command_line(pg: Engine, pg_url: str) -> None:
    result = cli(
        "users",
        "create",
        "ops@example.com",
        "--role",
        "auditor",
        env=clean_env(DATABASE_URL=pg_url),
        stdin=PASSWORD + "\n",
    )
    assert result.returncode == 0, result.stderr
    assert "created auditor ops@example.com" in result.stdout
    role = scalar(pg, "SELECT role FROM users WHERE email = 'ops@example.com'")
    assert role == "auditor"
    again = cli(
        "users",
        "create",
        "ops@example.com",
        env=clean_env(DATABASE_URL=pg_url),
        stdin=PASSWORD + "\n",
    )
    assert again.returncode == 1 and "already exists" in again.stderr


def test_logout_stops_the_token_at_once_in_another_api_process(pg: Engine, pg_url: str) -> None:
    first, second = make_api(pg_url, pg), make_api(pg_url, pg)
    a, b = next(first), next(second)
    try:
        a.signup("leaving@example.com")
        token, other = a.token("leaving@example.com"), a.token("leaving@example.com")
        assert b.get("/v1/me", headers=token).status_code == 200
        out = a.post("/auth/logout", headers=token)
        assert out.status_code == 200 and out.json() == {"msg": "logged out"}  # the original's
        refused = b.get("/v1/me", headers=token)  # the other process, at once
        assert refused.status_code == 401 and "logged out" in refused.json()["detail"]
        assert a.post("/auth/logout", headers=token).status_code == 401
        assert b.get("/v1/me", headers=other).status_code == 200  # only that token
        owner = a.person("owner@example.com")
        a.put("/v1/configs/pay/prod", headers=owner, json={"data": {"A": 1}})
        key = {"X-API-Key": a.key(owner, "pay")}
        assert a.post("/auth/logout", headers=key).status_code == 403
    finally:
        first.close()
        second.close()


def test_a_password_change_revokes_the_persons_other_tokens(any_api: Api) -> None:
    api = any_api
    api.signup("mover@example.com")
    one, two = api.token("mover@example.com"), api.token("mover@example.com")
    wrong = api.post(
        "/auth/password",
        headers=one,
        json={"current_password": "not-it", "new_password": "another-password"},
    )
    assert wrong.status_code == 401
    assert api.get("/v1/me", headers=two).status_code == 200  # nothing changed
    changed = api.post(
        "/auth/password",
        headers=one,
        json={"current_password": PASSWORD, "new_password": "another-password"},
    )
    assert changed.status_code == 200, changed.text
    fresh = {"Authorization": f"Bearer {changed.json()['access_token']}"}
    for old in (one, two):
        refused = api.get("/v1/me", headers=old)
        assert refused.status_code == 401 and "password change" in refused.json()["detail"]
    assert api.get("/v1/me", headers=fresh).status_code == 200
    assert (
        api.post(
            "/auth/login", json={"email": "mover@example.com", "password": PASSWORD}
        ).status_code
        == 401
    )
    assert api.token("mover@example.com", "another-password")
    short = api.post(
        "/auth/password",
        headers=fresh,
        json={"current_password": "another-password", "new_password": "short"},
    )
    assert short.status_code == 422


def test_api_keys_list_their_last_use(pg: Engine, pg_url: str) -> None:
    generator = make_api(pg_url, pg, key_usage_flush_seconds=0.2)
    api = next(generator)
    try:
        owner = api.person("owner@example.com")
        api.put("/v1/configs/pay/prod", headers=owner, json={"data": {"A": 1}})
        used = {"X-API-Key": api.key(owner, "pay")}
        api.key(owner, "pay", "write")  # never used
        for _ in range(3):  # the database, then the cache (the fast path) answers
            assert api.get("/v1/configs/pay/prod", headers=used).status_code == 200

        def last_use() -> dict[str, Any]:
            keys = api.get("/v1/api-keys", headers=owner).json()
            return {k["permission"]: k["last_used_at"] for k in keys}

        assert eventually(lambda: last_use()["read"] is not None, 5)
        assert last_use()["write"] is None

        def read_at() -> datetime:
            return datetime.fromisoformat(last_use()["read"].replace("Z", "+00:00"))

        first = read_at()
        assert abs((datetime.now(UTC) - first).total_seconds()) < 30
        time.sleep(0.05)
        assert api.get("/v1/configs/pay/prod", headers=used).status_code == 200
        assert eventually(lambda: read_at() > first, 5)  # it moves with each use
    finally:
        generator.close()
