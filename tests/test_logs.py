"""Structured logs: one JSON line per request (the cached fast path's too), process logs as JSON
lines, and the per-task lines of Celery at DEBUG only."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from configsync import logs
from tests.conftest import Api, make_api
from tests.test_metrics import scrape, total

URL = "/v1/configs/pay/prod"
ROUTE = "/v1/configs/{service}/{environment}"


def access_lines(err: str) -> list[dict[str, Any]]:
    parsed = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [p for p in parsed if p.get("logger") == "configsync.access"]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    levels = {name: logging.getLogger(name).level for name in logs.REPEATED}
    yield
    for handler in [h for h in root.handlers if isinstance(h, logs.StandardError)]:
        root.removeHandler(handler)
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


def test_every_request_is_one_json_line_with_id_caller_route_status_and_duration(
    pg_api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    api = pg_api
    owner = api.person("owner@example.com")
    assert api.put(URL, headers=owner, json={"data": {"A": 1}}).status_code == 201
    key_answer = api.post(
        "/v1/api-keys", headers=owner, json={"name": "k", "service": "pay", "permission": "read"}
    ).json()
    key = {"X-API-Key": key_answer["key"]}
    before = scrape(api)
    ids = [api.get(URL, headers=key).headers["x-request-id"] for _ in range(5)]
    after = scrape(api)
    # Some of those reads were answered by the cached fast path, in front of the router.
    hits = total(after, "configsync_config_reads_total", cache="hit") - total(
        before, "configsync_config_reads_total", cache="hit"
    )
    assert hits >= 1
    missing = api.get("/v1/nothing-here", headers={"X-Request-Id": "trace-me.42"})
    too_big = api.post(
        "/auth/login", content=b"x" * (api.app.state.settings.max_document_bytes + 70_000)
    )
    assert (missing.status_code, too_big.status_code) == (404, 413)
    api.app.state.runtime.access_log.flush()

    err = capsys.readouterr().err
    lines = access_lines(err)
    reads = [line for line in lines if line["request_id"] in ids]
    assert [line["request_id"] for line in reads] == ids  # each request once, in order
    for line in reads:
        assert line["route"] == ROUTE and line["path"] == URL and line["method"] == "GET"
        assert line["status"] == 200 and line["caller"] == f"api_key:{key_answer['id']}"
        assert 0 < line["duration_ms"] < 10_000 and line["level"] == "INFO"
        assert line["time"].endswith("+00:00")
    put = next(line for line in lines if line["method"] == "PUT")
    assert put["status"] == 201 and put["caller"].startswith("user:")
    traced = next(line for line in lines if line["request_id"] == "trace-me.42")
    assert traced["status"] == 404 and traced["route"] == "(unmatched)"
    assert traced["caller"] is None
    refused = next(line for line in lines if line["status"] == 413)
    assert refused["path"] == "/auth/login"
    # Credentials never reach the log.
    assert key_answer["key"] not in err
    assert owner["Authorization"].split()[1] not in err


@pytest.mark.parametrize("settings", [{"access_log": False}, {"log_level": "warning"}])
def test_the_request_log_can_be_switched_off(
    pg: Any, pg_url: str, settings: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    generator = make_api(pg_url, pg, **settings)
    api = next(generator)
    try:
        assert api.app.state.runtime.access_log is None
        assert api.get("/health/live", headers={"X-Request-Id": "unlogged-1"}).status_code == 200
    finally:
        generator.close()
    assert "unlogged-1" not in capsys.readouterr().err


def test_a_log_level_that_does_not_exist_is_refused() -> None:
    from configsync.errors import ConfigurationError
    from configsync.settings import Settings

    with pytest.raises((ValueError, ConfigurationError), match="not a log level"):
        Settings(log_level="verbose")


def test_process_logs_are_json_lines_and_repeated_lines_wait_for_debug(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("INFO", "json")
    logs.configure("INFO", "json")  # twice: still one line per record
    logging.getLogger("configsync.test").info("hello %s", "there")
    try:
        raise ValueError("bad value")
    except ValueError:
        logging.getLogger("configsync.test").exception("it failed")
    logging.getLogger("celery.app.trace").info("Task x succeeded in 0.01s")
    logging.getLogger("celery.app.trace").warning("Task y raised")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(x["level"], x["logger"], x["message"]) for x in lines] == [
        ("INFO", "configsync.test", "hello there"),
        ("ERROR", "configsync.test", "it failed"),
        ("WARNING", "celery.app.trace", "Task y raised"),
    ]
    assert "ValueError: bad value" in lines[1]["exception"]

    logs.configure("DEBUG", "text")
    logging.getLogger("celery.app.trace").info("Task z succeeded")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "INFO celery.app.trace: Task z succeeded" in err


def test_an_unexpected_error_is_answered_500_with_its_request_id_and_logged(
    pg_api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    """The request guard sits outside FastAPI's error middleware: the 500 it writes for an
    exception nobody handled still carries the request's id, and the log line says 500."""
    from fastapi.testclient import TestClient

    from configsync.auth.deps import get_caller

    def broken() -> None:
        raise RuntimeError("a bug")

    app = pg_api.app
    app.dependency_overrides[get_caller] = broken
    try:
        client = TestClient(app, raise_server_exceptions=False)
        answer = client.get("/v1/configs", headers={"X-Request-Id": "crash-7"})
    finally:
        app.dependency_overrides.clear()
    assert answer.status_code == 500
    assert answer.headers["x-request-id"] == "crash-7"
    app.state.runtime.access_log.flush()
    line = next(x for x in access_lines(capsys.readouterr().err) if x["request_id"] == "crash-7")
    assert line["status"] == 500


def test_request_ids_made_here_are_unique_and_a_forked_process_makes_its_own() -> None:
    import os
    import re

    from configsync.middleware import new_request_id

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the ids it makes go to the parent
        os.close(read)
        os.write(write, " ".join(new_request_id() for _ in range(1000)).encode())
        os._exit(0)
    os.close(write)
    ours = [new_request_id() for _ in range(1000)]
    with os.fdopen(read) as pipe:
        theirs = pipe.read().split()
    os.waitpid(pid, 0)
    assert len(theirs) == 1000
    assert len(set(ours) | set(theirs)) == 2000
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in ours + theirs)


@pytest.mark.parametrize("enabled", [False, True])
def test_fastapi_opentelemetry_is_consulted_only_when_switched_on(
    pg: Any, pg_url: str, enabled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off by default: FastAPI then does not look for configured OpenTelemetry providers on
    every request (7% of a cached read); `CONFIGSYNC_OPENTELEMETRY=true` turns it back on."""
    from opentelemetry import trace

    asked: list[int] = []
    real = trace.get_tracer_provider

    def counted() -> Any:
        asked.append(1)
        return real()

    monkeypatch.setattr(trace, "get_tracer_provider", counted)
    generator = make_api(pg_url, pg, opentelemetry=enabled)
    api = next(generator)
    try:
        asked.clear()
        for _ in range(3):
            assert api.get("/health/live").status_code == 200
    finally:
        generator.close()
    assert (len(asked) >= 3) is enabled
