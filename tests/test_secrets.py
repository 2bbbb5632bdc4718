"""Secrets: sealed before they enter the log, masked for every reader who should not see them,
destroyable for ever without breaking the chain (PostgreSQL and SQLite)."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from configsync.auth.models import UserRow
from configsync.configs import commands, queries
from configsync.configs.commands import WriteContext
from configsync.db import unit_of_work
from configsync.domain.actor import Actor
from configsync.domain.secrets import SecretRule, is_envelope, lookup, mask, set_path
from configsync.errors import SecretsUnavailable
from configsync.events.canonical import canonical_json
from configsync.secrets.crypto import MasterKeys, new_master_key
from configsync.secrets.vault import Vault
from projections.registry import NAMES, rebuild_one
from tests.conftest import MASTER_KEY, Api, clean_env, cli, make_api, scalar
from tests.strategies import patches, values

URL = "/v1/configs/pay/prod"


def plaintext() -> str:
    """A secret value no other test writes: found anywhere, it leaked."""
    return f"pw-{uuid.uuid4().hex}"


@pytest.fixture
def owner(any_api: Api) -> dict[str, str]:
    return any_api.person("owner@example.com")


def _put(api: Api, headers: dict[str, str], data: dict[str, Any], url: str = URL) -> Any:
    response = api.put(url, headers=headers, json={"data": data, "reason": "test"})
    assert response.status_code in (200, 201), response.text
    return response.json()


def _dump(api: Api) -> bytes:
    """Everything the database holds, as bytes: pg_dump, or the SQLite file and its WAL."""
    if api.engine.dialect.name == "postgresql":
        return subprocess.run(
            ["pg_dump", "--data-only", api.url], check=True, capture_output=True
        ).stdout
    database = Path(api.url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in (database, Path(f"{database}-wal")) if p.exists())


def _audit_file(api: Api) -> bytes:
    path = Path(api.app.state.settings.audit_log)
    return path.read_bytes() if path.exists() else b""


# --- nothing in plain text anywhere -----------------------------------------------------------


def test_no_plaintext_secret_in_the_database_the_audit_file_or_any_answer_but_a_read(
    any_api: Api, owner: dict[str, str]
) -> None:
    api = any_api
    first, second, nested = plaintext(), plaintext(), plaintext()
    _put(api, owner, {"DB_PASSWORD": first, "HOST": "db1", "database": {"password": nested}})
    api.patch(URL, headers=owner, json={"data": {"DB_PASSWORD": second, "HOST": "db2"}})
    rolled = api.post(URL + "/rollback", headers=owner, json={"to_version": 1, "reason": "back"})
    promoted = api.post(URL + "/promote", headers=owner, json={"to_environment": "staging"})
    answers = {
        "rollback": rolled,
        "promote": promoted,
        "history": api.get(URL + "/history", headers=owner),
        "diff": api.get(URL + "/diff", headers=owner, params={"from": 1, "to": 2}),
        "compare": api.get(
            "/v1/services/pay/compare",
            headers=owner,
            params={"from_env": "prod", "to_env": "staging"},
        ),
        "blame": api.get(URL + "/blame", headers=owner),
    }
    admin = api.person("admin@example.com", role="admin")
    answers |= {
        "audit": api.get("/v1/audit", headers=admin),
        "audit jsonl": api.get("/v1/audit", headers=admin, params={"format": "jsonl"}),
        "audit csv": api.get("/v1/audit", headers=admin, params={"format": "csv"}),
        "events": api.get("/v1/events", headers=admin),
        "events jsonl": api.get("/v1/events", headers=admin, params={"format": "jsonl"}),
    }
    for name, response in answers.items():
        assert response.status_code in (200, 201), (name, response.text)
        for secret in (first, second, nested):
            assert secret not in response.text, f"{name} shows a secret value"
    # The masked form, with a fingerprint, where a secret changed.
    diff = answers["diff"].json()["changes"]
    changed = next(c for c in diff if c["path"] == ["DB_PASSWORD"])
    assert changed["old"]["masked"] is True and changed["new"]["masked"] is True
    assert changed["old"]["fingerprint"] != changed["new"]["fingerprint"]
    assert answers["rollback"].json()["data"]["DB_PASSWORD"]["masked"] is True
    audit = answers["audit"].json()["items"]
    assert len(audit) == 4 and audit[1]["changes"][0]["value"]["masked"] is True

    # Only a read gives the values, to a reader allowed to see them.
    assert api.get(URL, headers=owner).json()["data"]["DB_PASSWORD"] == first  # rolled back
    assert (
        api.get(URL, headers=owner, params={"version": 2}).json()["data"]["DB_PASSWORD"] == second
    )

    stored = _dump(api) + _audit_file(api)
    assert b"db2" in stored  # the dump is real: plain values are in it
    for secret in (first, second, nested):
        assert secret.encode() not in stored
    verified = api.get("/v1/audit/verify", headers=admin).json()
    assert verified["ok"] and verified["checked"] == 4
    # Promoted values were sealed again under the target environment's own data key.
    with api.engine.connect() as conn:
        rows = dict(
            conn.execute(
                text("SELECT environment, data FROM config_current WHERE service = 'pay'")
            ).all()
        )
    for environment in ("prod", "staging"):
        sealed = json.loads(rows[environment])["DB_PASSWORD"]["$secret"]
        assert sealed.startswith(f"pay/{environment}/"), sealed


def test_owner_admin_and_read_key_read_plaintext_in_every_format_auditor_gets_it_masked(
    any_api: Api, owner: dict[str, str]
) -> None:
    api = any_api
    secret = plaintext()
    _put(api, owner, {"API_TOKEN": secret, "PORT": 8080})
    admin = api.person("admin@example.com", role="admin")
    key = {"X-API-Key": api.key(owner, "pay")}
    for headers in (owner, admin, key):
        assert api.get(URL, headers=headers).json()["data"]["API_TOKEN"] == secret
        for fmt in ("dotenv", "yaml"):
            answer = api.get(URL, headers=headers, params={"format": fmt})
            assert secret in answer.text, fmt
        past = api.get(URL, headers=headers, params={"version": 1}).json()
        assert past["data"]["API_TOKEN"] == secret
    legacy = api.get("/config/get", headers=owner, params={"service": "pay", "environment": "prod"})
    assert legacy.json()["config"]["API_TOKEN"] == secret

    auditor = api.person("auditor@example.com", role="auditor")
    for params in ({}, {"version": 1}, {"format": "dotenv"}, {"format": "yaml"}):
        for _ in range(2):  # the second read comes from the cache: masked there too
            answer = api.get(URL, headers=auditor, params=params)
            assert answer.status_code == 200 and secret not in answer.text, params
            assert "8080" in answer.text
    data = api.get(URL, headers=auditor).json()["data"]
    assert data["API_TOKEN"]["masked"] is True and len(data["API_TOKEN"]["fingerprint"]) == 16
    legacy = api.get(
        "/config/get", headers=auditor, params={"service": "pay", "environment": "prod"}
    )
    assert secret not in legacy.text
    stranger = api.person("stranger@example.com")
    assert api.get(URL, headers=stranger).status_code == 404
    assert api.get(URL + "/diff", headers=stranger, params={"from": 1}).status_code == 404


def test_a_write_answer_holds_plaintext_only_for_the_writer_who_sent_it(
    any_api: Api, owner: dict[str, str]
) -> None:
    secret = plaintext()
    written = _put(any_api, owner, {"DB_PASSWORD": secret})
    assert written["data"]["DB_PASSWORD"] == secret  # the writer may read the config
    promoted = any_api.post(URL + "/promote", headers=owner, json={"to_environment": "qa"})
    assert promoted.status_code == 201 and secret not in promoted.text


# --- fingerprints -----------------------------------------------------------------------------


def test_fingerprints_equal_for_equal_values_within_a_service_and_are_keyed(
    any_api: Api, owner: dict[str, str]
) -> None:
    api = any_api
    same, other = plaintext(), plaintext()
    _put(api, owner, {"A_PASSWORD": same, "B_PASSWORD": same, "C_PASSWORD": other})
    _put(api, owner, {"A_PASSWORD": same, "B_PASSWORD": other}, url="/v1/configs/pay/qa")
    auditor = api.person("auditor@example.com", role="auditor")
    data = api.get(URL, headers=auditor).json()["data"]
    fingerprints = {name: value["fingerprint"] for name, value in data.items()}
    assert fingerprints["A_PASSWORD"] == fingerprints["B_PASSWORD"]
    assert fingerprints["A_PASSWORD"] != fingerprints["C_PASSWORD"]
    for value in (same, other):  # not a bare hash of the value
        digest = hashlib.sha256(value.encode()).hexdigest()
        quoted = hashlib.sha256(json.dumps(value).encode()).hexdigest()
        assert not {digest[:16], quoted[:16]} & set(fingerprints.values())
    # Across environments of one service: equal values compare equal, different ones differ.
    compared = api.get(
        "/v1/services/pay/compare", headers=owner, params={"from_env": "prod", "to_env": "qa"}
    ).json()
    paths = {tuple(c["path"]): c for c in compared["changes"]}
    assert ("A_PASSWORD",) not in paths
    assert paths[("B_PASSWORD",)]["op"] == "replace" and paths[("C_PASSWORD",)]["op"] == "remove"
    assert paths[("B_PASSWORD",)]["new"]["fingerprint"] == fingerprints["C_PASSWORD"]


def test_an_unchanged_secret_shows_no_change_in_the_history(
    any_api: Api, owner: dict[str, str]
) -> None:
    secret = plaintext()
    _put(any_api, owner, {"DB_PASSWORD": secret, "N": 1})
    _put(any_api, owner, {"DB_PASSWORD": secret, "N": 2})
    history = any_api.get(URL + "/history", headers=owner).json()["items"]
    assert history[0]["summary"] == "+0 ~1 -0: N"
    diff = any_api.get(URL + "/diff", headers=owner, params={"from": 1}).json()
    assert [c["path"] for c in diff["changes"]] == [["N"]]


# --- reveal -----------------------------------------------------------------------------------


def test_a_reveal_shows_plaintext_to_the_owner_and_is_itself_an_event_in_the_log(
    any_api: Api, owner: dict[str, str]
) -> None:
    api = any_api
    first, second = plaintext(), plaintext()
    _put(api, owner, {"DB_PASSWORD": first, "N": 1})
    _put(api, owner, {"DB_PASSWORD": second, "N": 1})
    before = api.events()
    shown = api.get(URL + "/diff", headers=owner, params={"from": 1, "to": 2, "reveal": "true"})
    assert shown.status_code == 200
    change = shown.json()["changes"][0]
    assert (change["old"], change["new"]) == (first, second)
    assert shown.json()["revealed"] == [["DB_PASSWORD"]]
    assert api.events() == before + 1
    admin = api.person("admin@example.com", role="admin")
    event = api.get("/v1/events", headers=admin, params={"after": before}).json()["items"][0]
    assert event["type"] == "SecretsRevealed" and event["stream"] == "pay/prod/reveals"
    assert event["metadata"]["actor"]["name"] == "owner@example.com"
    assert event["data"]["paths"] == [["DB_PASSWORD"]] and first not in json.dumps(event)
    audited = api.get("/v1/audit", headers=admin, params={"action": "revealed"}).json()["items"]
    assert len(audited) == 1 and audited[0]["actor"]["name"] == "owner@example.com"
    assert "DB_PASSWORD" in audited[0]["summary"]
    # The config's own versions do not move; an auditor may not reveal.
    assert api.get(URL, headers=owner).json()["version"] == 2
    auditor = api.person("auditor@example.com", role="auditor")
    refused = api.get(URL + "/diff", headers=auditor, params={"from": 1, "reveal": "true"})
    assert refused.status_code == 403 and api.events() == before + 1


# --- declared secrets -------------------------------------------------------------------------


def test_declared_paths_are_sealed_from_the_next_write_and_earlier_plaintext_is_counted(
    any_api: Api, owner: dict[str, str]
) -> None:
    api = any_api
    _put(api, owner, {"database": {"host": "first-host.internal", "port": 5432}})
    _put(api, owner, {"database": {"host": "second-host.internal", "port": 5432}})
    declared = api.put("/v1/services/pay/secrets", headers=owner, json={"paths": ["database.host"]})
    assert declared.status_code == 200, declared.text
    body = declared.json()
    assert body["paths"] == ["database.host"] and body["plaintext_versions"] == {"database.host": 2}
    assert "*PASSWORD*" in body["patterns"]
    assert api.get("/v1/services/pay/secrets", headers=owner).json() == body
    _put(api, owner, {"database": {"host": "third-host.internal", "port": 5432}})
    auditor = api.person("auditor@example.com", role="auditor")
    seen = api.get(URL, headers=auditor).json()["data"]["database"]
    assert seen["host"]["masked"] is True and seen["port"] == 5432
    assert api.get(URL, headers=owner).json()["data"]["database"]["host"] == "third-host.internal"
    stored = _dump(api)
    assert b"second-host.internal" in stored  # declared after it was written: still plain
    assert b"third-host.internal" not in stored
    # Still two earlier versions in plain text: the third was sealed.
    again = api.get("/v1/services/pay/secrets", headers=owner).json()
    assert again["plaintext_versions"] == {"database.host": 2}


def test_declaring_secrets_is_for_the_owner_and_admins_and_checks_its_input(
    any_api: Api, owner: dict[str, str]
) -> None:
    api = any_api
    _put(api, owner, {"A": 1})
    stranger = api.person("stranger@example.com")
    auditor = api.person("auditor@example.com", role="auditor")
    body = {"paths": ["A"]}
    assert api.put("/v1/services/pay/secrets", headers=stranger, json=body).status_code == 404
    assert api.put("/v1/services/pay/secrets", headers=auditor, json=body).status_code == 403
    assert api.put("/v1/services/nope/secrets", headers=owner, json=body).status_code == 404
    bad = api.put("/v1/services/pay/secrets", headers=owner, json={"paths": ["a..b"]})
    assert bad.status_code == 422 and "dotted path" in bad.json()["detail"]
    extra = api.put("/v1/services/pay/secrets", headers=owner, json={"paths": [], "x": 1})
    assert extra.status_code == 422


def test_a_document_may_not_use_the_reserved_envelope_key(
    any_api: Api, owner: dict[str, str]
) -> None:
    before = any_api.events()
    for data in ({"$secret": {"k": "x"}}, {"a": [{"$secret": 1}]}):
        refused = any_api.put(URL, headers=owner, json={"data": data})
        assert refused.status_code == 422 and "reserved" in refused.json()["detail"]
    assert any_api.events() == before


# --- destroy ----------------------------------------------------------------------------------


def _projection_rows(engine: Engine) -> dict[str, list[Any]]:
    tables = {
        "config_current": "service, environment",
        "config_snapshots": "stream, version",
        "audit_log": "position",
    }
    with engine.connect() as conn:
        return {
            table: [
                tuple(row) for row in conn.execute(text(f"SELECT * FROM {table} ORDER BY {by}"))
            ]
            for table, by in tables.items()
        }


def test_destroy_makes_old_secret_values_unreadable_for_ever_and_keeps_the_chain(
    any_api: Api, owner: dict[str, str]
) -> None:
    api = any_api
    old, current_value = plaintext(), plaintext()
    _put(api, owner, {"DB_PASSWORD": old, "HOST": "h"})
    _put(api, owner, {"DB_PASSWORD": old, "HOST": "h2"})
    _put(api, owner, {"DB_PASSWORD": current_value, "HOST": "h2"})
    live_before = scalar(api.engine, "SELECT count(*) FROM secret_keys WHERE wrapped IS NOT NULL")

    done = api.post(
        URL + "/secrets/destroy", headers=owner, json={"up_to_version": 2, "reason": "leaked"}
    )
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["changed"] and body["version"] == 4 and body["destroyed_keys"]
    # Version 3 was sealed under the same generation as 1 and 2: it goes too, and says so.
    assert body["unreadable_through_version"] == 3

    # The current document reads as before; the old versions read as destroyed.
    assert api.get(URL, headers=owner).json()["data"] == {
        "DB_PASSWORD": current_value,
        "HOST": "h2",
    }
    for version in (1, 2, 3):
        value = api.get(URL, headers=owner, params={"version": version}).json()["data"]
        assert value["DB_PASSWORD"]["destroyed"] is True and value["DB_PASSWORD"]["masked"]
    # The history shows that the values existed and changed, and the destruction.
    history = api.get(URL + "/history", headers=owner).json()["items"]
    assert [item["action"] for item in history] == ["destroyed", "updated", "updated", "created"]
    assert history[0]["reason"] == "leaked"
    diff = api.get(URL + "/diff", headers=owner, params={"from": 2, "to": 3}).json()["changes"]
    assert diff[0]["path"] == ["DB_PASSWORD"] and diff[0]["old"] != diff[0]["new"]
    # Rolling back to a version whose secrets are gone is refused, clearly.
    refused = api.post(URL + "/rollback", headers=owner, json={"to_version": 1})
    assert refused.status_code == 422 and "destroyed" in refused.json()["detail"]

    admin = api.person("admin@example.com", role="admin")
    assert api.get("/v1/audit/verify", headers=admin).json()["ok"]
    # The keys are gone from the database: nothing there can open the old values.
    destroyed = scalar(
        api.engine,
        "SELECT count(*) FROM secret_keys WHERE wrapped IS NULL AND destroyed_at IS NOT NULL",
    )
    assert destroyed == len(body["destroyed_keys"]) >= 1
    live_after = scalar(api.engine, "SELECT count(*) FROM secret_keys WHERE wrapped IS NOT NULL")
    assert live_after == live_before - destroyed + 1  # a new generation seals the current values
    vault = Vault(MasterKeys.parse(MASTER_KEY))  # a fresh process with the master key
    with Session(api.engine) as session:
        first = queries.state_at(session, "pay", "prod", 1).document
        assert vault.open(session, first)["DB_PASSWORD"]["destroyed"] is True
    for secret in (old, current_value):
        assert secret.encode() not in _dump(api) + _audit_file(api)

    # Every projection rebuilt from the events is what it was.
    before = _projection_rows(api.engine)
    sessions = api.app.state.session_factory
    for name in NAMES:
        rebuild_one(sessions, name)
    assert _projection_rows(api.engine) == before
    # After the destruction, new writes seal under the new generation and read back.
    _put(api, owner, {"DB_PASSWORD": "fresh", "HOST": "h3"})
    assert api.get(URL, headers=owner).json()["data"]["DB_PASSWORD"] == "fresh"


def test_destroy_is_for_owners_and_admins_and_checks_its_input(
    any_api: Api, owner: dict[str, str]
) -> None:
    api = any_api
    _put(api, owner, {"N": 1})
    path = URL + "/secrets/destroy"
    nothing = api.post(path, headers=owner, json={"up_to_version": 1})
    assert nothing.status_code == 200 and nothing.json()["changed"] is False
    assert api.events() == 1  # nothing sealed: nothing appended
    assert api.post(path, headers=owner, json={"up_to_version": 2}).status_code == 422
    assert api.post(path, headers=owner, json={"up_to_version": 0}).status_code == 422
    auditor = api.person("auditor@example.com", role="auditor")
    stranger = api.person("stranger@example.com")
    assert api.post(path, headers=auditor, json={"up_to_version": 1}).status_code == 403
    assert api.post(path, headers=stranger, json={"up_to_version": 1}).status_code == 404
    key = {"X-API-Key": api.key(owner, "pay", "write")}
    assert api.post(path, headers=key, json={"up_to_version": 1}).status_code == 403


# --- master key rotation ----------------------------------------------------------------------


def test_master_key_rotation_keeps_every_version_readable(pg: Engine, pg_url: str) -> None:
    old_key, new_key = MASTER_KEY, new_master_key()
    values = [plaintext() for _ in range(3)]
    api_gen = make_api(pg_url, pg, master_keys=old_key)
    api = next(api_gen)
    owner = api.person("owner@example.com")
    for value in values:
        _put(api, owner, {"DB_PASSWORD": value})
    _put(api, owner, {"DB_PASSWORD": values[-1], "OTHER_TOKEN": "t"}, url="/v1/configs/pay/qa")
    api_gen.close()

    def every_version_reads(master_keys: str) -> None:
        generator = make_api(pg_url, pg, master_keys=master_keys)
        api = next(generator)
        try:
            for version, value in enumerate(values, start=1):
                answer = api.get(URL, headers=owner, params={"version": version})
                assert answer.status_code == 200, answer.text
                assert answer.json()["data"]["DB_PASSWORD"] == value
            assert api.get("/v1/configs/pay/qa", headers=owner).json()["data"]["OTHER_TOKEN"] == "t"
        finally:
            generator.close()

    # The new key first, the old one still listed: reads work before the rotation...
    every_version_reads(f"{new_key},{old_key}")
    vault = Vault(MasterKeys.parse(f"{new_key},{old_key}"))
    with unit_of_work(sessionmaker(pg)) as session:
        assert vault.rotate(session) == 3  # two data keys and the fingerprint root
    with unit_of_work(sessionmaker(pg)) as session:
        assert vault.rotate(session) == 0  # nothing left under the old key
    # ...and after it, with the old key removed.
    every_version_reads(new_key)
    # Without the key that wraps them, reads fail clearly (503), never with a 500.
    generator = make_api(pg_url, pg, master_keys=old_key)
    api = next(generator)
    try:
        answer = api.get(URL, headers=owner)
        assert answer.status_code == 503 and "CONFIGSYNC_MASTER_KEYS" in answer.json()["detail"]
    finally:
        generator.close()


def test_the_keys_rotate_command_rewraps_under_the_newest_master_key(
    pg: Engine, pg_url: str
) -> None:
    new_key = new_master_key()
    _person_u1(sessionmaker(pg))
    with unit_of_work(sessionmaker(pg)) as session:
        commands.replace(session, "pay", "prod", {"DB_PASSWORD": "x"}, _ctx())
    env = clean_env(DATABASE_URL=pg_url, CONFIGSYNC_MASTER_KEYS=f"{new_key},{MASTER_KEY}")
    result = cli("keys", "rotate", env=env)
    assert result.returncode == 0, result.stderr
    assert "re-wrapped 2 key(s)" in result.stdout
    ids = {row[0] for row in _all(pg, "SELECT DISTINCT master_key_id FROM secret_keys")}
    assert ids == {MasterKeys.parse(new_key).newest_id}
    printed = cli("keys", "new-master", env=clean_env())
    assert len(MasterKeys.parse(printed.stdout.strip()).keys) == 1


def _person_u1(sessions: sessionmaker[Session]) -> None:
    with unit_of_work(sessions) as s:
        s.add(UserRow(id="u1", email="u1@example.com", password_hash="x", role="user"))


@pytest.fixture
def u1(sessions: sessionmaker[Session]) -> None:
    """The person the commands below write as (services they create are theirs)."""
    _person_u1(sessions)


def _all(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql)))


def _ctx() -> WriteContext:
    return WriteContext(
        actor=Actor(kind="user", id="u1", name="owner@example.com"),
        vault=Vault(MasterKeys.parse(MASTER_KEY)),
    )


# --- the property: owner's view and auditor's view of any history -----------------------------

VAULT = Vault.ephemeral()
RULE = SecretRule()
secret_names = st.sampled_from(["DB_PASSWORD", "api_token", "S_KEY", "private", "x_credential"])
plain_names = st.sampled_from(["HOST", "port", "name", "KEYS", "monkey"])
mixed = st.dictionaries(
    st.one_of(secret_names, plain_names),
    st.one_of(values, st.dictionaries(st.one_of(secret_names, plain_names), values, max_size=3)),
    max_size=6,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(st.tuples(st.booleans(), st.one_of(mixed, patches)), min_size=1, max_size=6))
def test_owner_sees_every_document_and_auditor_the_same_with_exactly_the_secrets_masked(
    sessions: sessionmaker[Session], u1: None, steps: list[tuple[bool, dict[str, Any]]]
) -> None:
    service = f"svc-{uuid.uuid4().hex[:12]}"
    ctx = WriteContext(actor=Actor(kind="user", id="u1", name="o@example.com"), vault=VAULT)
    written: list[dict[str, Any]] = []
    for is_patch, body in steps:
        op = commands.patch if is_patch else commands.replace
        with unit_of_work(sessions) as s:
            try:
                result = op(s, service, "prod", body, ctx)
            except Exception as exc:  # a patch that leaves a non-object, or a reserved key
                assert type(exc).__name__ in ("InvalidDocument", "InvalidInput"), exc
                continue
        if result.changed:
            written.append(copy.deepcopy(result.document))
    with sessions() as s:
        for version, document in enumerate(written, start=1):
            stored = queries.state_at(s, service, "prod", version).document
            assert VAULT.open(s, stored) == document  # the owner's view
            auditor = mask(stored)
            expected = copy.deepcopy(document)
            for path in RULE.paths(document):
                found, shown = lookup(auditor, path)
                assert found and shown["masked"] is True and len(shown["fingerprint"]) == 16
                sealed = lookup(stored, path)[1]
                assert is_envelope(sealed)
                assert canonical_json(document) not in json.dumps(sealed)
                set_path(expected, path, shown)
            assert auditor == expected  # exactly the secret values masked, nothing else


def test_a_sealed_value_moved_to_another_key_does_not_open(
    sessions: sessionmaker[Session], u1: None
) -> None:
    with unit_of_work(sessions) as s:
        commands.replace(s, "pay", "prod", {"A_PASSWORD": "a", "B_PASSWORD": "b"}, _ctx())
    with sessions() as s:
        stored = queries.state_at(s, "pay", "prod", 1).document
        swapped = {"A_PASSWORD": stored["B_PASSWORD"], "B_PASSWORD": stored["A_PASSWORD"]}
        with pytest.raises(SecretsUnavailable):
            _ctx().vault.open(s, swapped)


# --- sealed values are single values in every change set --------------------------------------


def _sealed(fingerprint: str) -> dict[str, Any]:
    return {"$secret": f"svc/env/1-x:bm9uY2U=:Y2lwaGVy:{fingerprint}"}


atoms = st.one_of(
    st.text(alphabet="abc", min_size=1, max_size=3).map(_sealed),
    st.text(alphabet="abc", min_size=1, max_size=3).map(
        lambda f: {"masked": True, "fingerprint": f}
    ),
)
with_atoms = st.recursive(
    st.one_of(values, atoms),
    lambda children: st.dictionaries(st.sampled_from(["a", "b", "c"]), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    old=st.dictionaries(st.sampled_from(["a", "b", "c"]), with_atoms, max_size=3),
    new=st.dictionaries(st.sampled_from(["a", "b", "c"]), with_atoms, max_size=3),
)
def test_changes_never_reach_inside_a_sealed_or_masked_value_and_still_fold(
    old: dict[str, Any], new: dict[str, Any]
) -> None:
    from configsync.domain.documents import apply_changes, compute_changes, copy_document
    from configsync.domain.secrets import is_masked

    changes = compute_changes(old, new)
    assert apply_changes(copy_document(old), changes) == new
    for change in changes:
        path = change["path"]
        for cut in range(1, len(path)):
            for document in (old, new):
                found, inside = lookup(document, tuple(path[:cut]))
                assert not (found and (is_envelope(inside) or is_masked(inside))), change


# --- every process forgets a destroyed key at once --------------------------------------------


def test_a_destroy_in_one_process_stops_another_process_opening_the_old_values(
    pg: Engine, pg_url: str
) -> None:
    from tests.conftest import eventually

    first = make_api(pg_url, pg)
    second = make_api(pg_url, pg)
    a, b = next(first), next(second)
    try:
        owner = a.person("owner@example.com")
        _put(a, owner, {"DB_PASSWORD": "old"})
        _put(a, owner, {"DB_PASSWORD": "new"})
        # b opens version 1, and so holds its data key in memory.
        old = b.get(URL, headers=owner, params={"version": 1}).json()
        assert old["data"]["DB_PASSWORD"] == "old"
        done = a.post(URL + "/secrets/destroy", headers=owner, json={"up_to_version": 1})
        assert done.status_code == 200 and done.json()["destroyed_keys"]

        def destroyed_in_b() -> bool:
            data = b.get(URL, headers=owner, params={"version": 1}).json()["data"]
            return data["DB_PASSWORD"] == {
                "masked": True,
                "fingerprint": data["DB_PASSWORD"].get("fingerprint"),
                "destroyed": True,
            }

        assert eventually(destroyed_in_b, seconds=5)
        assert b.get(URL, headers=owner).json()["data"]["DB_PASSWORD"] == "new"
    finally:
        first.close()
        second.close()


# --- the installation's one fingerprint key ---------------------------------------------------


def test_first_writers_at_once_all_keep_the_one_fingerprint_key(pg: Engine) -> None:
    """Sixteen processes' first writes at once, on an empty installation: each tries to make
    the fingerprint key; exactly one is kept and every one of them uses it."""
    import threading

    sessions = sessionmaker(pg)
    roots: list[bytes] = []
    start = threading.Barrier(16)

    def first_write() -> None:
        vault = Vault(MasterKeys.parse(MASTER_KEY))  # a process of its own: nothing cached
        start.wait()
        with sessions() as s:
            roots.append(vault._fingerprint_root(s, pending := []))
            assert pending == []  # made and kept apart from the write, not with it

    threads = [threading.Thread(target=first_write) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(roots) == 16 and len(set(roots)) == 1
    assert scalar(pg, "SELECT count(*) FROM secret_keys") == 1
    # And a write sealed by any of them shows the same fingerprint as the others'.
    _person_u1(sessions)
    for environment in ("prod", "qa"):
        with unit_of_work(sessions) as s:
            commands.replace(s, "pay", environment, {"DB_PASSWORD": "same"}, _ctx())
    with Session(pg) as s:
        prod = mask(queries.get(s, "pay", "prod").document)["DB_PASSWORD"]
        qa = mask(queries.get(s, "pay", "qa").document)["DB_PASSWORD"]
    assert prod["fingerprint"] == qa["fingerprint"]
