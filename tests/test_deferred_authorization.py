"""A config write's authorization settled in its group commit's batch
(configsync.configs.deferred): the same refusals, in the same order, as the endpoint's; a token
that stops standing in another process stops its writes at once; one statement for a batch."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from configsync.auth.authenticator import Credentials
from configsync.configs import commands
from configsync.configs.auth import plain_write_context
from configsync.configs.deferred import Authorization, authorize_and_record
from configsync.configs.fastwrite import DirectWrites
from configsync.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from tests.conftest import Api, make_api

TOO_DEEP: dict[str, Any] = {}
for _ in range(30):
    TOO_DEEP = {"k": TOO_DEEP}


@pytest.fixture
def deferred(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The writes whose authorization the direct path left to the batch."""
    calls: list[str] = []
    real = DirectWrites._submitted

    async def counted(self: DirectWrites, route: Any, *args: Any) -> Any:
        calls.append(route.template)
        return await real(self, route, *args)

    monkeypatch.setattr(DirectWrites, "_submitted", counted)
    yield calls


def _answer(response: Any) -> tuple[int, Any]:
    text_ = response.text.replace("freshb", "fresha").replace("/b", "/a").replace("'b'", "'a'")
    body = json.loads(text_)
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in {"updated_at", "environment"}}
    return response.status_code, body


def test_faults_together_are_refused_in_the_endpoints_order(
    pg_api: Api, pg: Engine, deferred: list[str]
) -> None:
    """Each request has several faults; the batch refuses it for the one the endpoint names
    first (401, then 403/404, then the version's 404, then the request's own 400/413/422)."""
    api = pg_api
    owner = api.person("owner@example.com")
    stranger = api.person("stranger@example.com")
    auditor = api.person("auditor@example.com", role="auditor")
    disabled = api.person("disabled@example.com")
    api.signup("leaving@example.com")
    leaving = api.token("leaving@example.com")
    assert api.post("/auth/logout", headers=leaving).status_code == 200
    with pg.begin() as conn:
        conn.execute(
            text("UPDATE users SET is_active = false WHERE email = 'disabled@example.com'")
        )
    api.put("/v1/configs/pay/setup?via=router", headers=owner, json={"data": {}})  # the service
    bad = {"data": TOO_DEEP}
    cases: list[tuple[str, str, dict[str, str], dict[str, Any], int]] = [
        ("PUT", "pay/{}", leaving, bad, 401),
        ("PUT", "pay/{}", disabled, bad, 401),
        ("PATCH", "pay/{}", stranger, {"data": {"n": 1}, "reason": "r" * 999}, 404),
        ("PUT", "pay/{}", auditor, bad, 403),
        ("PUT", "fresh{}/prod", auditor, {"data": {"n": 1}}, 403),
        ("PUT", "fresh{}/prod", {**owner, "If-Match": '"4"'}, bad, 404),
        ("PUT", "pay/{}", {**owner, "If-Match": "nonsense"}, bad, 422),  # If-Match's 422
        ("PUT", "pay/{}", owner, bad, 422),
        ("PUT", "pay/{}", owner, {"data": {"n": 1}, "expected_version": 3}, 412),
        ("PUT", "pay/{}", owner, {"data": {"n": 2}}, 201),
        ("PUT", "fresh{}/prod", stranger, {"data": {"n": 3}}, 201),
    ]
    for method, path, headers, body, status in cases:
        taken = len(deferred)
        direct = api.request(method, "/v1/configs/" + path.format("a"), headers=headers, json=body)
        routed = api.request(
            method, "/v1/configs/" + path.format("b") + "?via=router", headers=headers, json=body
        )
        assert direct.status_code == status, (path, headers, direct.text)
        assert _answer(direct) == _answer(routed), (path, headers)
        assert len(deferred) == taken + 1
    # Nothing refused left a trace: pay/a holds the one write that went through.
    history = api.get("/v1/configs/pay/a/history", headers=owner).json()["items"]
    assert [item["version"] for item in history] == [1]
    assert api.get("/v1/configs/fresha/prod", headers=stranger).json()["data"] == {"n": 3}


def test_the_original_update_keeps_its_order_too(pg_api: Api, deferred: list[str]) -> None:
    api = pg_api
    owner = api.person("owner@example.com")
    stranger = api.person("stranger@example.com")
    api.post("/config/update", headers=owner, json={"name": "pay", "config": {"A": 1}})
    for headers, body, status in [
        (stranger, {"name": "pay", "config": TOO_DEEP}, 404),
        (owner, {"name": "pay", "config": TOO_DEEP}, 422),
        (owner, {"name": "pay", "config": {"A": 2}}, 200),
    ]:
        answer = api.post("/config/update", headers=headers, json=body)
        assert answer.status_code == status, answer.text
    assert deferred.count("/config/update") == 4
    assert api.get("/config/get?service=pay", headers=owner).json()["config"] == {"A": 2}


def test_a_token_stopped_in_another_process_stops_its_writes_at_once(
    pg: Engine, pg_url: str
) -> None:
    first, second = make_api(pg_url, pg), make_api(pg_url, pg)
    a, b = next(first), next(second)
    try:
        a.signup("leaving@example.com")
        token = a.token("leaving@example.com")
        put = {"json": {"data": {"A": 1}}}
        assert b.put("/v1/configs/pay/prod", headers=token, **put).status_code == 201
        assert a.post("/auth/logout", headers=token).status_code == 200
        refused = b.put("/v1/configs/pay/prod", headers=token, json={"data": {"A": 2}})
        assert refused.status_code == 401 and "logged out" in refused.json()["detail"]
        owner = a.person("owner@example.com")
        assert b.put("/v1/configs/own/prod", headers=owner, **put).status_code == 201
        with pg.begin() as conn:
            conn.execute(
                text("UPDATE users SET is_active = false WHERE email = 'owner@example.com'")
            )
        assert b.put("/v1/configs/own/prod", headers=owner, json={"data": {}}).status_code == 401
        with pg.begin() as conn:
            conn.execute(
                text("UPDATE users SET is_active = true, role = 'auditor' WHERE email = :e"),
                {"e": "owner@example.com"},
            )
        demoted = b.put("/v1/configs/own/prod", headers=owner, json={"data": {}})
        assert demoted.status_code == 403  # the role is the account's, read in the batch
        assert b.get("/v1/configs/own/prod", headers=owner).json()["data"] == {"A": 1}
    finally:
        first.close()
        second.close()


def test_a_batch_reads_every_writes_holder_and_owner_in_one_statement(pg_api: Api) -> None:
    """authorize_and_record, given many deferred writes at once: one statement reads them all,
    each write gets its own outcome, and those refused leave no event."""
    api = pg_api
    owner = api.person("owner@example.com")
    stranger = api.person("stranger@example.com")
    auditor = api.person("auditor@example.com", role="auditor")
    assert api.put("/v1/configs/pay/prod", headers=owner, json={"data": {}}).status_code == 201
    runtime = api.client.app.state.runtime
    key = {"X-API-Key": api.key(owner, "pay", "write")}
    assert api.put("/v1/configs/pay/k", headers=key, json={"data": {}}).status_code == 201
    known = runtime.authenticator.cached(Credentials("key", key["X-API-Key"]))
    assert known is not None  # the key's first write cached it

    def claims(headers: dict[str, str]) -> Any:
        token = headers["Authorization"].removeprefix("Bearer ")
        return runtime.authenticator.claims(Credentials("jwt", token))

    def write(
        environment: str, authorization: Authorization, service: str = "pay", **kwargs: Any
    ) -> Any:
        ctx = plain_write_context(
            known, runtime.settings, runtime.vault, runtime.write_path, "r", None
        )
        pending = commands.replacing(service, environment, {"env": environment}, ctx, **kwargs)
        return dataclasses.replace(pending, authorization=authorization)

    writes = [
        write("a", Authorization(claims=claims(owner))),
        write("b", Authorization(claims=claims(stranger))),
        write("c", Authorization(claims=claims(auditor))),
        write("d", Authorization(caller=known)),
        write("e", Authorization(claims=claims(owner), refusal=InvalidInput("no"))),
        write("f", Authorization(claims=claims(stranger), refusal=InvalidInput("no"))),
        write("g", Authorization(claims=claims(owner), expected_version=2), "nosuch"),
        write("h", Authorization(claims=claims(owner)), expected_version=1),
    ]
    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(runtime.engine, "before_cursor_execute", listener)
    try:
        with runtime.session_factory() as session:
            outcomes = authorize_and_record(session, writes)
            session.commit()
    finally:
        event.remove(runtime.engine, "before_cursor_execute", listener)
    # Every writer's account and owner, with the locks and states: migration 0017's function.
    assert sum("configsync_authorize_lock_and_read(" in s for s in statements) == 1, statements
    assert sum("users" in s for s in statements) == 1, statements
    kinds = [type(o).__name__ for o in outcomes]
    assert kinds[0] == kinds[3] == "WriteResult", outcomes
    assert isinstance(outcomes[1], NotFound) and isinstance(outcomes[5], NotFound)
    assert isinstance(outcomes[2], Forbidden)
    assert isinstance(outcomes[4], InvalidInput)
    assert isinstance(outcomes[6], NotFound)  # a version named for a service that is not there
    assert type(outcomes[7]).__name__ == "VersionConflict"
    assert outcomes[0].event.metadata["actor"]["name"] == "owner@example.com"
    assert outcomes[3].event.metadata["actor"]["kind"] == "api_key"
    found = {e: api.get(f"/v1/configs/pay/{e}", headers=owner).status_code for e in "abcdefgh"}
    assert found == {"a": 200, "b": 404, "c": 404, "d": 200, "e": 404, "f": 404, "g": 404, "h": 404}
    with pytest.raises(Unauthorized):
        runtime.authenticator.claims(Credentials("jwt", "not-a-token"))


def test_a_write_whose_authorization_is_not_settled_is_never_decided(pg_api: Api) -> None:
    runtime = pg_api.client.app.state.runtime
    caller = runtime.authenticator.cached(
        Credentials("key", runtime.settings.legacy_api_key or "x")
    )
    ctx = plain_write_context(
        caller or _nobody(), runtime.settings, runtime.vault, runtime.write_path, "r", None
    )
    pending = commands.replacing("pay", "prod", {}, ctx)
    unsettled = dataclasses.replace(pending, authorization=Authorization(caller=_nobody()))
    with runtime.session_factory() as session, pytest.raises(RuntimeError, match="not settled"):
        commands.decide_and_record(session, [unsettled])


def _nobody() -> Any:
    from configsync.auth.permissions import Caller

    return Caller(kind="user", id="nobody", name="nobody", role="admin")


@pytest.mark.parametrize("made_by", ["owner@example.com", "writer@example.com"])
@pytest.mark.parametrize("path", ["deferred", "endpoint"])
def test_a_service_made_while_its_batch_waits_for_the_lock_is_authorized_as_it_is(
    pg_api: Api, pg: Engine, deferred: list[str], made_by: str, path: str
) -> None:
    """A write authorized to create a service (none was there when its owner was read: in its
    batch's statement for a deferred write, in its request for one through the endpoint, here
    with an Idempotency-Key) whose service is made before its batch holds the stream lock. Made
    by someone else: refused (the endpoint's 404 when the batch authorizes it, 409 "send it
    again" when the request did), nothing appended. Made by the writer: the write goes through."""
    from concurrent.futures import ThreadPoolExecutor

    from configsync.auth.models import ServiceRow
    from configsync.db import make_session_factory, unit_of_work
    from configsync.events.store import STREAM_LOCK_NAMESPACE
    from tests.conftest import eventually, scalar

    api = pg_api
    writer = api.person("writer@example.com")
    if path == "endpoint":
        writer = {**writer, "Idempotency-Key": "race-1"}  # not the direct path
    api.person("owner@example.com")
    owner_id = scalar(pg, f"SELECT id FROM users WHERE email = '{made_by}'")
    group = api.app.state.write_path.group
    waiting = (
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND query LIKE '%_lock_and_read%'"  # either path's statement that takes the locks
    )
    with pg.connect() as holder, ThreadPoolExecutor(1) as pool:
        holder.execute(
            text("SELECT pg_advisory_xact_lock(:ns, hashtext('race/prod'))"),
            {"ns": STREAM_LOCK_NAMESPACE},
        )
        before = group.items
        write = pool.submit(api.put, "/v1/configs/race/prod", headers=writer, json={"data": {}})
        assert eventually(lambda: group.items == before + 1)
        assert eventually(lambda: scalar(pg, waiting) == 1)  # its batch waits on the lock
        with unit_of_work(make_session_factory(pg)) as session:
            session.add(ServiceRow(name="race", owner_id=owner_id))
        holder.rollback()  # the lock is released: the batch reads on, after the service
        answer = write.result(timeout=30)
    assert deferred == (["/v1/configs/{service}/{environment}"] if path == "deferred" else [])
    assert scalar(pg, "SELECT owner_id FROM services WHERE name = 'race'") == owner_id
    if made_by == "owner@example.com":
        assert answer.status_code == (404 if path == "deferred" else 409), answer.text
        assert api.events() == 0
    else:
        assert answer.status_code == 201, answer.text
        assert api.events() == 1
