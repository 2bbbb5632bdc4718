"""The original implementation's own routes (its code, beyond its README), each with its request
and answer shape. Every JSON answer is also checked against the route's declared model
(tests.conftest.SchemaCheck: exactly those fields)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from tests.conftest import PASSWORD, Api, make_api, scalar

SECRET = "pw-original-routes-5f1c"


def _update(api: Api, headers: dict[str, str], config: dict[str, Any], **extra: Any) -> Any:
    body = {"name": "pay", "config": config, **extra}
    response = api.post("/config/update", headers=headers, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_register_answers_as_the_original_and_the_account_logs_in_by_username(
    any_api: Api,
) -> None:
    api = any_api
    body = {"username": "newuser", "email": "NewUser@Example.com", "password": "securepass123"}
    made = api.post("/auth/register", json=body)
    assert made.status_code == 200, made.text
    out = made.json()
    assert {k: out[k] for k in ("username", "email", "role")} == {
        "username": "newuser",
        "email": "newuser@example.com",
        "role": "user",
    }
    # The original's OAuth2 form login with the username, and ours with the email.
    form = api.post("/auth/login", data={"username": "newuser", "password": "securepass123"})
    assert form.status_code == 200 and form.json()["token_type"] == "bearer"
    headers = {"Authorization": f"Bearer {form.json()['access_token']}"}
    me = api.get("/v1/me", headers=headers).json()
    assert me["id"] == out["id"] and me["username"] == "newuser"
    assert api.token("newuser@example.com", "securepass123")
    wrong = api.post("/auth/login", data={"username": "newuser", "password": "wrong-password"})
    assert wrong.status_code == 401

    again = api.post("/auth/register", json={**body, "email": "other@example.com"})
    assert again.status_code == 400 and "Username already exists" in again.json()["detail"]
    same_email = api.post("/auth/register", json={**body, "username": "another"})
    assert same_email.status_code == 400 and "already exists" in same_email.json()["detail"]
    # Registering cannot grant itself a role: that is an admin's.
    admin = api.post(
        "/auth/register",
        json={
            "username": "boss",
            "email": "boss@example.com",
            "password": PASSWORD,
            "role": "admin",
        },
    )
    assert admin.status_code == 403 and "admin" in admin.json()["detail"]
    bad = [
        {**body, "username": "x", "email": "not-an-email"},
        {**body, "username": "has space", "email": "s@example.com"},
        {**body, "username": "short", "email": "p@example.com", "password": "short"},
        {"username": "nopassword", "email": "n@example.com"},
    ]
    for wrong_body in bad:
        refused = api.post("/auth/register", json=wrong_body)
        assert refused.status_code in (400, 422), (wrong_body, refused.text)
        assert refused.json()["detail"]
    assert scalar(api.engine, "SELECT count(*) FROM users") == 1


def test_register_follows_closed_sign_up(pg: Engine, pg_url: str) -> None:
    generator = make_api(pg_url, pg, signup="closed")
    api = next(generator)
    try:
        body = {"username": "late", "email": "late@example.com", "password": PASSWORD}
        refused = api.post("/auth/register", json=body)
        assert refused.status_code == 403 and "closed" in refused.json()["detail"]
        assert scalar(pg, "SELECT count(*) FROM users") == 0
    finally:
        generator.close()


def test_logout_answers_as_the_original_and_the_token_stops(any_api: Api) -> None:
    api = any_api
    api.signup("leaving@example.com")
    token = api.token("leaving@example.com")
    out = api.post("/auth/logout", headers=token)
    assert out.status_code == 200 and out.json() == {"msg": "logged out"}
    assert api.get("/v1/me", headers=token).status_code == 401


def test_list_shows_the_callers_configs_and_admins_filter_by_owner(any_api: Api) -> None:
    api = any_api
    owner = api.person("owner@example.com")
    other = api.person("other@example.com")
    admin = api.person("admin@example.com", role="admin")
    _update(api, owner, {"API_URL": "https://a", "DB_PASSWORD": SECRET})
    api.post("/config/update", headers=other, json={"name": "mail", "config": {"FROM": "x@y"}})
    staging = {"data": {"API_URL": "https://staging"}}
    assert api.put("/v1/configs/pay/staging", headers=owner, json=staging).status_code == 201

    mine = api.get("/config/list", headers=owner).json()["configs"]
    assert [c["name"] for c in mine] == ["pay"]  # the default environment only
    assert mine[0]["config"] == {"API_URL": "https://a", "DB_PASSWORD": SECRET}  # a read
    assert mine[0]["version"] == 1 and mine[0]["environment"] == "default"
    owner_id = mine[0]["user_id"]
    assert owner_id is not None
    staged = api.get("/config/list", headers=owner, params={"environment": "staging"}).json()
    assert [c["config"] for c in staged["configs"]] == [{"API_URL": "https://staging"}]

    assert [c["name"] for c in api.get("/config/list", headers=admin).json()["configs"]] == [
        "mail",
        "pay",
    ]
    only = api.get("/config/list", headers=admin, params={"target_user_id": owner_id}).json()
    assert [c["name"] for c in only["configs"]] == ["pay"]
    # A person cannot use target_user_id to see someone else's configs.
    theirs = api.get("/config/list", headers=other, params={"target_user_id": owner_id}).json()
    assert [c["name"] for c in theirs["configs"]] == ["mail"]
    auditor = api.person("auditor@example.com", role="auditor")
    seen = api.get("/config/list", headers=auditor).json()["configs"]
    pay = next(c for c in seen if c["name"] == "pay")
    assert pay["config"]["DB_PASSWORD"]["masked"] is True
    assert api.get("/config/list").status_code == 401


def test_versions_diff_rollback_and_delete_as_the_original(any_api: Api) -> None:
    api = any_api
    owner = api.person("owner@example.com")
    _update(api, owner, {"API_URL": "https://a", "TIMEOUT": 30, "DB_PASSWORD": SECRET})
    _update(api, owner, {"API_URL": "https://a", "TIMEOUT": 60, "DB_PASSWORD": SECRET})
    _update(api, owner, {"API_URL": "https://b", "TIMEOUT": 60, "RETRIES": 3})

    versions = api.get("/config/versions/pay", headers=owner).json()
    assert versions["service_name"] == "pay"
    listed = versions["versions"]
    assert [v["version"] for v in listed] == [3, 2, 1]  # newest first
    assert [v["id"] for v in listed] == [3, 2, 1]
    assert listed[2]["config"]["TIMEOUT"] == 30 and listed[0]["config"]["RETRIES"] == 3
    assert listed[1]["config"]["DB_PASSWORD"]["masked"] is True  # history: masked for all
    assert all(v["action"] in ("created", "updated") for v in listed)
    assert SECRET not in api.get("/config/versions/pay", headers=owner).text
    # As in the original: a service the caller cannot see, or that does not exist, has none.
    stranger = api.person("stranger@example.com")
    assert api.get("/config/versions/pay", headers=stranger).json()["versions"] == []
    assert api.get("/config/versions/nothing", headers=owner).json()["versions"] == []

    diff = api.get("/config/diff/pay", headers=owner, params={"v1": 1, "v2": 3})
    assert diff.status_code == 200, diff.text
    found = diff.json()
    assert (found["service"], found["version1"], found["version2"]) == ("pay", 1, 3)
    assert found["diff"]["values_changed"]["root['TIMEOUT']"] == {"new_value": 60, "old_value": 30}
    assert "root['RETRIES']" in found["diff"]["dictionary_item_added"]
    assert "root['DB_PASSWORD']" in found["diff"]["dictionary_item_removed"]
    assert found["stats"] == {"added": 1, "removed": 1, "changed": 2}
    assert SECRET not in diff.text
    original_names = {"version1_id": 1, "version2_id": 3}
    assert api.get("/config/diff/pay", headers=owner, params=original_names).json() == found
    for params, status in (
        ({"v1": 1}, 422),
        ({"v1": 1, "v2": 3, "version2_id": 2}, 422),
        ({"v1": 1, "v2": 9}, 404),
        ({"v1": 0, "v2": 1}, 422),
    ):
        refused = api.get("/config/diff/pay", headers=owner, params=params)
        assert refused.status_code == status, (params, refused.text)
        assert refused.json()["detail"]
    assert (
        api.get("/config/diff/pay", headers=stranger, params={"v1": 1, "v2": 2}).status_code == 404
    )

    before = api.events()
    rolled = api.post("/config/rollback/pay", headers=owner, params={"version": 1, "reason": "bad"})
    assert rolled.status_code == 200, rolled.text
    back = rolled.json()
    assert (back["name"], back["version"], back["rollback_of"], back["changed"]) == (
        "pay",
        4,
        1,
        True,
    )
    assert back["config"]["TIMEOUT"] == 30 and back["config"]["DB_PASSWORD"]["masked"] is True
    assert api.events() == before + 1
    history = api.get("/v1/configs/pay/default/history", headers=owner).json()["items"][0]
    assert (history["rollback_of"], history["reason"]) == (1, "bad")
    current = api.get("/config/get", headers=owner, params={"service": "pay"}).json()
    assert current["config"]["DB_PASSWORD"] == SECRET and current["version"] == 4
    by_id = api.post("/config/rollback/pay", headers=owner, params={"target_version_id": 3})
    assert by_id.status_code == 200 and by_id.json()["version"] == 5
    auditor = api.person("auditor@example.com", role="auditor")
    for headers, params, status in (
        (owner, {"version": 99}, 404),
        (owner, {}, 422),
        (stranger, {"version": 1}, 404),
        (auditor, {"version": 1}, 403),
    ):
        refused = api.post("/config/rollback/pay", headers=headers, params=params)
        assert refused.status_code == status, (params, refused.text)
    assert (
        api.post("/config/rollback/nothing", headers=owner, params={"version": 1}).status_code
        == 404
    )
    assert api.events() == before + 2

    assert api.delete("/config/delete/pay", headers=stranger).status_code == 404
    deleted = api.delete("/config/delete/pay", headers=owner, params={"reason": "retired"})
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["detail"] == "Service config deleted successfully"
    assert deleted.json()["version"] == 6
    assert api.get("/config/get", headers=owner, params={"service": "pay"}).status_code == 404
    after = api.get("/config/versions/pay", headers=owner).json()["versions"]
    assert after[0]["config"] is None and after[0]["action"] == "deleted"
    assert len(after) == 6  # the history stays
    assert api.delete("/config/delete/pay", headers=owner).status_code == 404
    assert api.delete("/config/delete/nothing", headers=owner).status_code == 404


def test_health_of_the_original(any_api: Api) -> None:
    answer = any_api.get("/config/health")
    assert answer.status_code == 200
    assert answer.json() == {"api_status": "ok", "db_status": "connected"}
