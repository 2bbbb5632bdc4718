"""Configs v1 over HTTP on PostgreSQL: the contract, renderings, and cache coherence."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from configsync.configs.rendering import NotRenderable, dotenv_string, render_dotenv, render_yaml
from configsync.domain.documents import documents_equal
from tests.conftest import Api, eventually, make_api
from tests.strategies import documents

URL = "/v1/configs/pay/prod"


@pytest.fixture
def owner(pg_api: Api) -> dict[str, str]:
    return pg_api.person("owner@example.com")


def test_v1_contract_from_create_to_recreate(pg_api: Api, owner: dict[str, str]) -> None:
    api = pg_api
    created = api.put(URL, headers=owner, json={"data": {"A": 1, "B": {"x": 1}}, "reason": "first"})
    assert created.status_code == 201
    assert created.headers["etag"] == '"1"'
    assert created.json() | {"updated_at": ""} == {
        "service": "pay",
        "environment": "prod",
        "version": 1,
        "data": {"A": 1, "B": {"x": 1}},
        "updated_at": "",
        "updated_by": {
            "kind": "user",
            "id": created.json()["updated_by"]["id"],
            "name": "owner@example.com",
        },
        "changed": True,
    }

    got = api.get(URL, headers=owner)
    assert got.status_code == 200 and got.headers["etag"] == '"1"'
    assert got.json()["data"] == {"A": 1, "B": {"x": 1}}
    assert api.get(URL, headers={**owner, "If-None-Match": '"1"'}).status_code == 304

    stale = api.put(URL, headers={**owner, "If-Match": '"0"'}, json={"data": {"A": 2}})
    assert stale.status_code == 412
    assert stale.json()["current_version"] == 1 and "expected version 0" in stale.json()["detail"]
    assert api.events() == 1
    stale_body = api.put(URL, headers=owner, json={"data": {"A": 2}, "expected_version": 5})
    assert stale_body.status_code == 412 and api.events() == 1

    patched = api.patch(
        URL,
        headers={**owner, "If-Match": '"1"'},
        json={"data": {"B": {"x": None, "y": 2}, "C": [1]}},
    )
    assert patched.status_code == 200 and patched.json()["version"] == 2
    assert patched.json()["data"] == {"A": 1, "B": {"y": 2}, "C": [1]}

    noop = api.put(URL, headers=owner, json={"data": {"A": 1, "B": {"y": 2}, "C": [1]}})
    assert noop.status_code == 200
    assert noop.json()["changed"] is False and noop.json()["version"] == 2
    assert api.events() == 2

    deleted = api.request("DELETE", URL, headers=owner, json={"reason": "retire"})
    assert deleted.status_code == 200 and deleted.json() == {
        "service": "pay",
        "environment": "prod",
        "version": 3,
        "deleted": True,
    }
    gone = api.get(URL, headers=owner)
    assert gone.status_code == 404
    assert gone.json()["deleted_at_version"] == 3 and "deleted" in gone.json()["detail"]
    assert api.delete(URL, headers=owner).status_code == 404

    again = api.put(URL, headers=owner, json={"data": {"Z": True}})
    assert again.status_code == 201 and again.json()["version"] == 4

    assert api.get(URL + "?version=1", headers=owner).json()["data"] == {"A": 1, "B": {"x": 1}}
    assert api.get(URL + "?version=2", headers=owner).json()["version"] == 2
    assert api.get(URL + "?version=3", headers=owner).status_code == 404  # deleted there
    assert api.get(URL + "?version=9", headers=owner).status_code == 404
    assert api.get(URL + "?version=0", headers=owner).status_code == 422


def test_expected_version_zero_means_must_not_exist(pg_api: Api, owner: dict[str, str]) -> None:
    assert (
        pg_api.put(URL, headers=owner, json={"data": {}, "expected_version": 0}).status_code == 201
    )
    assert (
        pg_api.put(URL, headers=owner, json={"data": {"A": 1}, "expected_version": 0}).status_code
        == 412
    )
    both = pg_api.put(
        URL, headers={**owner, "If-Match": '"1"'}, json={"data": {}, "expected_version": 2}
    )
    assert both.status_code == 422
    assert (
        pg_api.put(URL, headers={**owner, "If-Match": "soon"}, json={"data": {}}).status_code == 422
    )


def test_list_shows_only_what_the_caller_may_read(pg_api: Api, owner: dict[str, str]) -> None:
    other = pg_api.person("other@example.com")
    auditor = pg_api.person("auditor@example.com", role="auditor")
    pg_api.put(URL, headers=owner, json={"data": {"A": 1}})
    pg_api.put("/v1/configs/pay/staging", headers=owner, json={"data": {"A": 1}})
    pg_api.put("/v1/configs/web/prod", headers=other, json={"data": {"A": 1}})
    key = pg_api.key(owner, "pay", environment="staging")

    def listed(headers: dict[str, str]) -> set[str]:
        items = pg_api.get("/v1/configs", headers=headers).json()["items"]
        return {f"{i['service']}/{i['environment']}" for i in items}

    assert listed(owner) == {"pay/prod", "pay/staging"}
    assert listed(other) == {"web/prod"}
    assert listed(auditor) == {"pay/prod", "pay/staging", "web/prod"}
    assert listed({"X-API-Key": key}) == {"pay/staging"}
    assert pg_api.get("/v1/configs").status_code == 401


def test_formats_render_the_document(pg_api: Api, owner: dict[str, str]) -> None:
    doc = {
        "API_URL": "https://a.example.com/x?y=1#z",
        "TIMEOUT": 30,
        "NESTED": {"a": [1, 2]},
        "OFF": False,
    }
    pg_api.put(URL, headers=owner, json={"data": doc})
    dotenv = pg_api.get(URL + "?format=dotenv", headers=owner)
    assert (
        dotenv.headers["content-type"].startswith("text/plain") and dotenv.headers["etag"] == '"1"'
    )
    assert dotenv_values(stream=io.StringIO(dotenv.text)) == {
        "API_URL": doc["API_URL"],
        "TIMEOUT": "30",
        "NESTED": '{"a":[1,2]}',
        "OFF": "false",
    }
    assert yaml.safe_load(pg_api.get(URL + "?format=yaml", headers=owner).text) == doc
    assert pg_api.get(URL + "?format=xml", headers=owner).status_code == 422
    pg_api.put("/v1/configs/pay/bad", headers=owner, json={"data": {"not a name": 1}})
    refused = pg_api.get("/v1/configs/pay/bad?format=dotenv", headers=owner)
    assert refused.status_code == 422 and "not a name" in refused.json()["detail"]


# Awkward strings: quotes, $, backticks, backslashes, newlines, #, spaces, unicode.
awkward = st.text(
    alphabet=st.sampled_from(list("aZ09 _-'\"$`\\\n\r\t#=${}!*?;&|<>()~€ü🎉"))
    | st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=20,
)
# Names a shell sets or keeps read-only itself are the shell's, not the document's.
SHELL_OWN = {
    "_",
    "PWD",
    "OLDPWD",
    "SHLVL",
    "UID",
    "EUID",
    "PPID",
    "GROUPS",
    "SHELLOPTS",
    "BASHOPTS",
}
flat_documents = st.dictionaries(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True).filter(
        lambda k: k not in SHELL_OWN and not k.startswith("BASH")
    ),
    st.one_of(
        awkward,
        st.integers(),
        st.booleans(),
        st.none(),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    max_size=6,
)


def _shell_reads(text: str) -> dict[str, str]:
    result = subprocess.run(
        ["env", "-i", "bash", "-c", "set -a; . /dev/stdin; env -0"],
        input=text.encode(),
        capture_output=True,
        check=True,
    )
    pairs = (item.split(b"=", 1) for item in result.stdout.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode() for k, v in pairs if k not in (b"PWD", b"SHLVL", b"_")}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flat_documents)
def test_dotenv_is_read_back_identically_by_a_shell_and_by_python_dotenv(
    doc: dict[str, Any],
) -> None:
    expected = {k: dotenv_string(v) for k, v in doc.items()}
    try:
        text = render_dotenv(doc)
    except NotRenderable as refused:
        # Only values that mix '$' or '`' with a quote, a backslash or '${' may be refused.
        bad = [
            k
            for k, v in expected.items()
            if ("$" in v or "`" in v) and ("'" in v or "\\" in v or "${" in v)
        ]
        assert bad, refused
        return
    assert dotenv_values(stream=io.StringIO(text), interpolate=True) == expected
    assert _shell_reads(text) == expected


@given(flat_documents)
def test_values_without_dollar_or_backtick_always_render(doc: dict[str, Any]) -> None:
    doc = {k: v for k, v in doc.items() if not (isinstance(v, str) and ("$" in v or "`" in v))}
    render_dotenv(doc)


@settings(max_examples=300)
@given(documents)
def test_yaml_is_read_back_as_the_same_document(doc: dict[str, Any]) -> None:
    try:
        rendered = render_yaml(doc)
    except yaml.YAMLError:
        pytest.fail("valid JSON must render as YAML")
    assert documents_equal(yaml.safe_load(rendered), doc)


# --- caches across processes ------------------------------------------------------------------


@pytest.fixture
def second_process(pg_api: Api, pg: Engine) -> Iterator[Api]:
    """Another API process on the same database (its own caches and change-feed listener)."""
    yield from make_api(pg_api.url, pg)


def test_a_write_in_one_process_reaches_the_cache_of_another(
    pg_api: Api, second_process: Api, owner: dict[str, str]
) -> None:
    pg_api.put(URL, headers=owner, json={"data": {"A": 1}})
    key = pg_api.key(owner, "pay")
    reader = {"X-API-Key": key}
    assert second_process.get(URL, headers=reader).json()["version"] == 1  # now cached there
    assert second_process.get(URL, headers=reader).json()["version"] == 1

    pg_api.put(URL, headers=owner, json={"data": {"A": 2}})
    assert eventually(lambda: second_process.get(URL, headers=reader).json()["version"] == 2)
    assert second_process.get(URL, headers=reader).json()["data"] == {"A": 2}


def test_a_cached_read_never_goes_back_behind_what_the_caller_has_seen(
    pg_api: Api, second_process: Api, owner: dict[str, str]
) -> None:
    pg_api.put(URL, headers=owner, json={"data": {"A": 1}})
    key = pg_api.key(owner, "pay")
    reader = {"X-API-Key": key}
    assert second_process.get(URL, headers=reader).json()["version"] == 1
    feed = second_process.client.app.state.change_feed
    feed.stop()  # no more invalidations reach the second process: its cache would stay at 1
    feed._on_connected()  # ...while it still believes its cache (the worst case)
    second_process.get(URL, headers=reader)
    pg_api.put(URL, headers=owner, json={"data": {"A": 2}})
    assert second_process.get(URL, headers=reader).json()["version"] == 1  # stale, as set up
    # A caller that has seen version 2 is never answered from the stale entry
    seen = second_process.get(URL, headers={**reader, "If-None-Match": '"2"'})
    assert seen.status_code == 304 and seen.headers["etag"] == '"2"'
    fresh = second_process.get(URL + "?consistent=true", headers=reader)
    assert fresh.json()["version"] == 2


def test_a_revoked_key_stops_working_in_every_process(
    pg_api: Api, second_process: Api, owner: dict[str, str]
) -> None:
    pg_api.put(URL, headers=owner, json={"data": {"A": 1}})
    created = pg_api.post(
        "/v1/api-keys", headers=owner, json={"name": "k", "service": "pay", "permission": "read"}
    )
    reader = {"X-API-Key": created.json()["key"]}
    assert second_process.get(URL, headers=reader).status_code == 200  # key now cached there
    assert pg_api.delete(f"/v1/api-keys/{created.json()['id']}", headers=owner).status_code == 204
    assert pg_api.get(URL, headers=reader).status_code == 401  # the revoking process: at once
    assert eventually(lambda: second_process.get(URL, headers=reader).status_code == 401)


def test_a_cached_read_makes_no_database_round_trip(pg_api: Api, owner: dict[str, str]) -> None:
    from sqlalchemy import event

    pg_api.put(URL, headers=owner, json={"data": {"A": 1}})
    reader = {"X-API-Key": pg_api.key(owner, "pay")}
    assert pg_api.get(URL, headers=reader).status_code == 200  # fills the caches
    statements: list[str] = []
    engine = pg_api.client.app.state.engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        for headers, status in ((reader, 200), ({**reader, "If-None-Match": '"1"'}, 304)):
            for fmt in ("", "?format=dotenv", "?format=yaml"):
                response = pg_api.get(URL + fmt, headers=headers)
                assert response.status_code == status and response.headers["etag"] == '"1"'
        assert statements == []
        assert pg_api.get(URL + "?consistent=true", headers=reader).status_code == 200
        assert statements, "consistent=true must read the database"
    finally:
        event.remove(engine, "before_cursor_execute", listener)


def test_a_persons_write_reads_its_caller_and_the_owner_in_its_batch(
    pg_api: Api, owner: dict[str, str]
) -> None:
    """A config write's request makes no statement of its own: its batch reads the token's
    holder and the service's owner (configsync.configs.deferred); the decision still follows
    the owner it read."""
    from sqlalchemy import event

    assert pg_api.put(URL, headers=owner, json={"data": {"A": 1}}).status_code == 201
    stranger = pg_api.person("stranger@example.com")
    runtime = pg_api.client.app.state.runtime
    requests: list[str] = []
    batches: list[str] = []
    engines = {
        id(requests): runtime.write_sessions.kw["bind"],
        id(batches): runtime.group._engine,
    }
    listeners = {
        id(requests): lambda *args: requests.append(args[2]),
        id(batches): lambda *args: batches.append(args[2]),
    }
    for key, engine in engines.items():
        event.listen(engine, "before_cursor_execute", listeners[key])
    try:
        assert pg_api.put(URL, headers=owner, json={"data": {"A": 2}}).status_code == 200
        mine = pg_api.post(
            "/config/update",
            headers=stranger,
            json={"name": "theirs", "environment": "prod", "config": {"B": 1}},
        )
        refused = pg_api.patch(URL, headers=stranger, json={"data": {"A": 3}})
    finally:
        for key, engine in engines.items():
            event.remove(engine, "before_cursor_execute", listeners[key])
    assert mine.status_code == 200, mine.text
    assert refused.status_code == 404, refused.text
    assert requests == []
    # One batch each (one request at a time): one statement reads its holder and owner, and it
    # is the one that locks and reads the config (no round trip of its own): migration 0017's
    # function, given the writers' accounts with the configs' names.
    holders = [s for s in batches if "configsync_authorize_lock_and_read(" in s]
    assert len(holders) == 3, batches
    assert all("%(users)s, %(jtis)s" in s for s in holders), holders
    assert not [s for s in batches if "users" in s and s not in holders], batches
    assert pg_api.get(URL, headers=owner).json()["data"] == {"A": 2}
    assert pg_api.get("/v1/configs/theirs/prod", headers=stranger).json()["data"] == {"B": 1}


def test_a_batch_writes_its_current_rows_and_notices_in_its_append_statement(
    pg_api: Api, second_process: Api, owner: dict[str, str]
) -> None:
    """The append lock is held from the append to the commit: the current projection's rows
    and the change feed's notices go in the append's own statement (events.Alongside), so a
    batch makes two statements in all, and both still reach their readers."""
    from sqlalchemy import event

    pg_api.put(URL, headers=owner, json={"data": {"A": 1}})
    reader = {"X-API-Key": pg_api.key(owner, "pay")}
    assert second_process.get(URL, headers=reader).json()["version"] == 1  # cached there
    engine = pg_api.client.app.state.runtime.group._engine
    batch: list[str] = []
    listener = lambda *args: batch.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        assert pg_api.put(URL, headers=owner, json={"data": {"A": 2}}).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert len(batch) == 2, batch
    locked, appended = batch
    assert "configsync_authorize_lock_and_read(" in locked
    assert "configsync_append_batch" in appended
    assert "INSERT INTO config_current" in appended and "pg_notify" in appended
    assert pg_api.get(URL, headers=owner).json()["data"] == {"A": 2}
    assert eventually(lambda: second_process.get(URL, headers=reader).json()["version"] == 2)


def test_a_writing_key_is_looked_up_once_and_its_revocation_still_stops_writes(
    pg_api: Api, second_process: Api, owner: dict[str, str]
) -> None:
    from sqlalchemy import event

    pg_api.put(URL, headers=owner, json={"data": {"A": 1}})
    created = pg_api.post(
        "/v1/api-keys", headers=owner, json={"name": "w", "service": "pay", "permission": "write"}
    )
    writer = {"X-API-Key": created.json()["key"]}
    assert second_process.patch(URL, headers=writer, json={"data": {"B": 0}}).status_code == 200
    statements: list[str] = []
    engine = second_process.client.app.state.engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        for n in range(3):
            answer = second_process.patch(URL, headers=writer, json={"data": {"B": n + 1}})
            assert answer.status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert statements and not [s for s in statements if "api_keys" in s]
    assert pg_api.delete(f"/v1/api-keys/{created.json()['id']}", headers=owner).status_code == 204

    def refused() -> bool:
        return second_process.patch(URL, headers=writer, json={"data": {"B": 9}}).status_code == 401

    assert eventually(refused)
    assert pg_api.get(URL, headers=owner).json()["data"] == {"A": 1, "B": 3}


def test_request_ids_are_echoed_and_kept_with_the_event(pg_api: Api, owner: dict[str, str]) -> None:
    sent = pg_api.put(
        URL, headers={**owner, "X-Request-ID": "deploy-42.a"}, json={"data": {"A": 1}}
    )
    assert sent.headers["x-request-id"] == "deploy-42.a"
    made = pg_api.get(URL, headers={**owner, "X-Request-ID": "bad id with spaces"})
    assert (
        made.headers["x-request-id"] != "bad id with spaces"
        and len(made.headers["x-request-id"]) == 32
    )
    with pg_api.engine.connect() as conn:
        from sqlalchemy import text

        metadata = json.loads(conn.scalar(text("SELECT metadata FROM events")))
    assert metadata["request_id"] == "deploy-42.a"
    assert metadata["client"].startswith("python-httpx") or metadata["client"] == "testclient"
