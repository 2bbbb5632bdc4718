"""PUT and PATCH answered in front of FastAPI's router (configsync.configs.fastwrite) answer as
the endpoint does, case by case; what the direct path does not take reaches the endpoint
untouched."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from configsync.configs.fastwrite import DirectWrites
from tests.conftest import Api

LONG_REASON = "r" * 5000
TOO_DEEP: dict[str, Any] = {}
for _ in range(30):
    TOO_DEEP = {"k": TOO_DEEP}
VOLATILE = {"updated_at", "created_at", "at"}


@pytest.fixture
def direct_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The writes the direct path made (on a thread of its own, or handed to the batch)."""
    calls: list[str] = []
    real, real_submitted = DirectWrites._write, DirectWrites._submitted

    def counted(self: DirectWrites, route: Any, *args: Any) -> Any:
        calls.append(route.template)
        return real(self, route, *args)

    async def counted_submitted(self: DirectWrites, route: Any, *args: Any) -> Any:
        calls.append(route.template)
        return await real_submitted(self, route, *args)

    monkeypatch.setattr(DirectWrites, "_write", counted)  # the caller read on a thread
    monkeypatch.setattr(DirectWrites, "_submitted", counted_submitted)  # left to the batch
    yield calls


def _answer(response: Any) -> tuple[int, Any, str | None]:
    """Status, body and ETag, with the two configs' names (pay/a, pay/b) made one."""
    text = response.text.replace("pay/b", "pay/a")
    try:
        body = json.loads(text)
    except ValueError:
        body = text
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in VOLATILE}
        body.pop("environment", None)  # "a" or "b", by construction
    return response.status_code, body, response.headers.get("etag")


def test_each_case_is_answered_as_the_endpoint_answers_it(
    any_api: Api, direct_calls: list[str]
) -> None:
    """The same sequence of writes goes to two configs: directly to one, through the endpoint
    (a query string sends it there) to the other. Every answer, and the stored result, match."""
    api = any_api
    owner = api.person("owner@example.com")
    stranger = api.person("stranger@example.com")
    api.put("/v1/configs/pay/setup?via=router", headers=owner, json={"data": {}})  # the service
    reader = {"X-API-Key": api.key(owner, "pay", "read")}
    writer = {"X-API-Key": api.key(owner, "pay", "write")}
    secret = {"db": {"password": "hunter2", "host": "db"}, "n": 1}
    cases: list[tuple[str, dict[str, str], dict[str, Any]]] = [
        ("PUT", owner, {"json": {"data": secret, "reason": "first"}}),
        ("PUT", owner, {"json": {"data": secret}}),  # unchanged
        ("PATCH", writer, {"json": {"data": {"n": 2, "db": {"host": None}}}}),
        ("PATCH", owner, {"json": {"data": {"n": 3}, "expected_version": 1}}),  # stale
        ("PUT", {**owner, "If-Match": '"2"'}, {"json": {"data": {"n": 4}}}),
        ("PUT", {**owner, "If-Match": '"9"'}, {"json": {"data": {"n": 5}}}),  # stale
        ("PUT", {**owner, "If-Match": "nonsense"}, {"json": {"data": {"n": 5}}}),
        ("PUT", {**owner, "If-Match": '"3"'}, {"json": {"data": {}, "expected_version": 2}}),
        ("PUT", reader, {"json": {"data": {"n": 6}}}),  # read-only key
        ("PUT", stranger, {"json": {"data": {"n": 7}}}),  # not the owner
        ("PUT", {}, {"json": {"data": {"n": 8}}}),  # nobody
        ("PUT", {"Authorization": "Bearer not-a-token"}, {"json": {"data": {"n": 8}}}),
        ("PUT", {"X-API-Key": "cs_" + "x" * 43}, {"json": {"data": {"n": 8}}}),
        ("PATCH", owner, {"json": {"data": {"n": 9}, "reason": LONG_REASON}}),  # too long
        ("PUT", owner, {"json": {"data": TOO_DEEP}}),  # the limits refuse it
        ("PUT", owner, {"json": {"data": {"n": 10}, "reason": "last"}}),
    ]
    for method, headers, kwargs in cases:
        taken = len(direct_calls)
        direct = api.request(method, "/v1/configs/pay/a", headers=headers, **kwargs)
        routed = api.request(method, "/v1/configs/pay/b?via=router", headers=headers, **kwargs)
        assert _answer(direct) == _answer(routed), (method, headers, kwargs)
        # Only a body that fails its model's validation (the over-long reason) is left to the
        # endpoint, which words the 422.
        invalid = kwargs["json"].get("reason") == LONG_REASON
        assert len(direct_calls) == taken + (not invalid)
    assert direct.status_code == 200
    history = [
        api.get(f"/v1/configs/pay/{env}/history", headers=owner).json()["items"] for env in "ab"
    ]
    for item in history[0] + history[1]:
        for field in ("position", "recorded_at"):
            item.pop(field, None)
    assert history[0] == history[1] and len(history[0]) == 4  # created, patched, put, put
    assert [api.get(f"/v1/configs/pay/{env}", headers=owner).json()["data"] for env in "ab"] == [
        {"n": 10}
    ] * 2


def test_the_original_update_is_answered_as_its_endpoint_answers_it(
    any_api: Api, direct_calls: list[str]
) -> None:
    """POST /config/update, the original README's way (JSON labelled as a form by curl -d) and
    the usual one, directly and through the endpoint, case by case."""
    api = any_api
    owner = api.person("owner@example.com")
    stranger = api.person("stranger@example.com")
    form = {**owner, "Content-Type": "application/x-www-form-urlencoded"}
    cases: list[tuple[dict[str, str], dict[str, Any]]] = [
        (form, {"name": "pay", "config": {"A": 1}}),
        (owner, {"name": "pay", "config": {"A": 1}}),  # unchanged
        (owner, {"name": "pay", "config": {"A": 2}, "reason": "raise A"}),
        (stranger, {"name": "pay", "config": {"A": 3}}),
        ({}, {"name": "pay", "config": {"A": 4}}),
        (owner, {"name": "bad name!", "config": {"A": 5}}),
        (owner, {"name": "pay", "config": TOO_DEEP}),
    ]
    for headers, body in cases:
        answers = []
        for environment, path in (("a", "/config/update"), ("b", "/config/update?via=router")):
            content = json.dumps({**body, "environment": environment})
            answers.append(api.post(path, headers=headers, content=content))
        assert _answer(answers[0]) == _answer(answers[1]), (headers, body)
    assert direct_calls == ["/config/update"] * len(cases)
    assert [api.get(f"/v1/configs/pay/{env}", headers=owner).json()["data"] for env in "ab"] == [
        {"A": 2}
    ] * 2


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"content": b'{"data": 5}', "headers": {"Content-Type": "application/json"}}, 422),
        ({"content": b'{"data": {"a": ', "headers": {"Content-Type": "application/json"}}, 422),
        ({"content": b'{"data": {"a": 1}}', "headers": {"Content-Type": "text/plain"}}, None),
        ({"json": {"data": {"a": 1}}, "headers": {"Idempotency-Key": "k-1"}}, 201),
    ],
    ids=["not-an-object", "broken-json", "not-json-media-type", "idempotency-key"],
)
def test_what_the_direct_path_does_not_take_reaches_the_endpoint(
    pg_api: Api, direct_calls: list[str], kwargs: dict[str, Any], status: int | None
) -> None:
    owner = pg_api.person("owner@example.com")
    headers = {**owner, **kwargs.pop("headers")}
    direct = pg_api.put("/v1/configs/pay/prod", headers=headers, **kwargs)
    routed = pg_api.put("/v1/configs/pay/prod?via=router", headers=headers, **kwargs)
    assert not direct_calls
    if status is not None:
        assert direct.status_code == status
    # The endpoint gave both answers: the same refusal, or (with the key) the first outcome
    # replayed, with nothing appended the second time.
    assert _answer(direct) == _answer(routed)
    assert pg_api.events() == (1 if status == 201 else 0)


def test_direct_writes_are_counted_logged_and_carried_to_the_caches(
    pg_api: Api, direct_calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_logs import access_lines
    from tests.test_metrics import scrape, total

    owner = pg_api.person("owner@example.com")
    before = scrape(pg_api)
    first = pg_api.put("/v1/configs/pay/prod", headers=owner, json={"data": {"A": 1}})
    key = {"X-API-Key": pg_api.key(owner, "pay", "read")}
    assert pg_api.get("/v1/configs/pay/prod", headers=key).json()["data"] == {"A": 1}
    second = pg_api.patch(
        "/v1/configs/pay/prod",
        headers={**owner, "X-Request-Id": "direct-1", "User-Agent": "deployer/2"},
        json={"data": {"B": 2}},
    )
    assert (first.status_code, second.status_code) == (201, 200) and len(direct_calls) == 2
    # The cached read sees the write at once (read-your-writes through the process's cache).
    assert pg_api.get("/v1/configs/pay/prod", headers=key).json()["data"] == {"A": 1, "B": 2}
    after = scrape(pg_api)
    route = "/v1/configs/{service}/{environment}"

    def requests(method: str, status: str) -> float:
        counted = total(after, "configsync_http_requests_total", method=method, status=status)
        was = total(before, "configsync_http_requests_total", method=method, status=status)
        return counted - was

    assert requests("PUT", "201") == 1 and requests("PATCH", "200") == 1
    assert total(after, "configsync_http_requests_total", route=route, method="PATCH") >= 1
    pg_api.app.state.runtime.access_log.flush()
    line = next(x for x in access_lines(capsys.readouterr().err) if x["request_id"] == "direct-1")
    assert line["route"] == route and line["status"] == 200 and line["caller"].startswith("user:")
    with pg_api.engine.connect() as conn:
        from sqlalchemy import text

        metadata = conn.scalar(text("SELECT metadata FROM events ORDER BY position DESC LIMIT 1"))
    assert '"direct-1"' in metadata and '"deployer/2"' in metadata


def test_direct_writes_wait_on_no_thread_unless_they_read_their_caller(
    pg_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A person's write, or a cached key's, is handed to its batch from the event loop and
    runs on the group's leader thread; a key not cached yet is read on the runtime's write
    threads (their own executor, not Starlette's pool: anyio's hop cost three times as much)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    owner = pg_api.person("owner@example.com")
    runtime = pg_api.client.app.state.runtime
    assert isinstance(runtime.write_threads, ThreadPoolExecutor)
    requests: list[str] = []
    batches: list[str] = []
    real, real_run = DirectWrites._write, runtime.group._run

    def named(self: DirectWrites, *args: Any) -> Any:
        requests.append(threading.current_thread().name)
        return real(self, *args)

    def run(items: Any) -> Any:
        batches.append(threading.current_thread().name)
        return real_run(items)

    monkeypatch.setattr(DirectWrites, "_write", named)
    monkeypatch.setattr(runtime.group, "_run", run)
    assert pg_api.put("/v1/configs/pay/prod", headers=owner, json={"data": {}}).status_code == 201
    assert (
        pg_api.put("/v1/configs/pay/prod", headers=owner, json={"data": {"A": 1}}).status_code
        == 200
    )
    assert requests == [] and len(batches) == 2
    assert all(name.startswith("configsync-group") for name in batches), batches
    writer = {"X-API-Key": pg_api.key(owner, "pay", "write")}
    for n in (2, 3):  # read on a write thread, then cached: left to the batch
        answer = pg_api.put("/v1/configs/pay/prod", headers=writer, json={"data": {"A": n}})
        assert answer.status_code == 200
    assert len(requests) == 1 and requests[0].startswith("configsync-write"), requests
    assert len(batches) == 4
