"""The event pipeline with a real `configsync worker` (Celery, prefork), Redis and PostgreSQL.

Every event is audited exactly once, in order, whatever happens to the broker or the worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.conftest import (
    LOG_KEY,
    Api,
    clean_env,
    eventually,
    free_port,
    make_api,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def audit_file(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "config_audit.log"


class Worker:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *args: str, log: Path | None = None, **extra: str) -> Worker:
        exe = Path(sys.executable).with_name("configsync")
        self.process = subprocess.Popen(
            [str(exe), "worker", "--concurrency", "1", "--loglevel", "WARNING", *args],
            env={**self.env, **extra},
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb") if log else subprocess.DEVNULL,
            start_new_session=True,
        )
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)


@pytest.fixture
def worker_env(pg_url: str, redis_url: str, audit_file: Path) -> dict[str, str]:
    return clean_env(
        DATABASE_URL=pg_url,
        REDIS_URL=redis_url,
        CONFIGSYNC_AUDIT_LOG=str(audit_file),
        CONFIGSYNC_CHECKPOINT_LOG=str(audit_file.with_name("checkpoints.log")),
        CONFIGSYNC_LOG_SIGNING_KEY=LOG_KEY,
        CONFIGSYNC_CATCH_UP_INTERVAL_SECONDS="1",
    )


@pytest.fixture
def worker(worker_env: dict[str, str]) -> Iterator[Worker]:
    w = Worker(worker_env)
    yield w
    w.kill(signal.SIGTERM)


@pytest.fixture
def api(pg: Engine, pg_url: str, redis_url: str, audit_file: Path) -> Iterator[Api]:
    yield from make_api(pg_url, pg, redis_url=redis_url, audit_log=str(audit_file))


def audit_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(text("SELECT * FROM audit_log ORDER BY position")).all()


def file_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def exactly_once(engine: Engine, path: Path, count: int) -> bool:
    rows, lines = audit_rows(engine), file_lines(path)
    positions = list(range(1, count + 1))
    return [r.position for r in rows] == positions and [
        line["position"] for line in lines
    ] == positions


def writes(api: Api, count: int, headers: dict[str, str], start: int = 0) -> None:
    for i in range(start, start + count):
        response = api.put(
            f"/v1/configs/svc{i % 3}/prod",
            headers=headers,
            json={"data": {"N": i, "NAME": f"n{i}"}, "reason": f"write {i}"},
        )
        assert response.status_code in (200, 201), response.text


def test_writes_are_audited_exactly_once_in_order_with_their_fields(
    api: Api, worker: Worker, audit_file: Path
) -> None:
    worker.start()
    owner = api.person("owner@example.com")
    writes(api, 12, owner)
    assert eventually(lambda: exactly_once(api.engine, audit_file, 12))
    rows = audit_rows(api.engine)
    first = rows[0]
    assert (first.service, first.environment, first.version, first.action) == (
        "svc0",
        "prod",
        1,
        "created",
    )
    assert first.actor_name == "owner@example.com" and first.actor_kind == "user"
    assert first.summary == "+2 ~0 -0: N, NAME" and first.reason == "write 0"
    assert rows[3].action == "updated" and rows[3].summary == "+0 ~2 -0: N, NAME"
    with api.engine.connect() as conn:
        hashes = dict(conn.execute(text("SELECT position, hash FROM events")).all())
    assert all(r.hash == hashes[r.position] for r in rows)
    line = file_lines(audit_file)[3]
    assert line["actor"]["name"] == "owner@example.com" and line["summary"] == rows[3].summary
    assert line["changes"] == [
        {"op": "replace", "path": ["N"], "value": 3, "old": 0},
        {"op": "replace", "path": ["NAME"], "value": "n3", "old": "n0"},
    ]


def test_broker_down_writes_still_succeed_and_are_audited_once_it_is_back(
    pg: Engine, pg_url: str, worker: Worker, audit_file: Path
) -> None:
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    down = make_api(pg_url, pg, redis_url=dead_broker, audit_log=str(audit_file))
    api = next(down)
    owner = api.person("owner@example.com")
    for i in range(8):
        began = time.monotonic()
        response = api.put(f"/v1/configs/svc{i}/prod", headers=owner, json={"data": {"N": i}})
        assert response.status_code == 201
        assert time.monotonic() - began < 1.0  # the dead broker does not hold the request up
    assert audit_rows(pg) == []
    with pytest.raises(StopIteration):
        next(down)

    worker.start()  # the real broker: start-up catch-up applies what was missed
    assert eventually(lambda: exactly_once(pg, audit_file, 8))


def test_a_worker_killed_mid_batch_loses_and_doubles_nothing(
    api: Api, worker: Worker, audit_file: Path, worker_env: dict[str, str]
) -> None:
    owner = api.person("owner@example.com")
    writes(api, 20, owner)
    # Each batch of 5 sleeps 1.5 s before it commits: kill the worker inside the second one.
    worker.start(CONFIGSYNC_PROJECTION_BATCH_SIZE="5", CONFIGSYNC_DEBUG_BATCH_DELAY="1.5")
    assert eventually(lambda: len(audit_rows(api.engine)) >= 5, seconds=30)
    time.sleep(0.5)
    worker.kill(signal.SIGKILL)
    partial = audit_rows(api.engine)
    assert 5 <= len(partial) < 20 and len(partial) % 5 == 0  # whole batches only
    assert [r.position for r in partial] == list(range(1, len(partial) + 1))

    restarted = Worker(worker_env).start()  # a fresh worker, no delay
    try:
        assert eventually(lambda: exactly_once(api.engine, audit_file, 20), seconds=30)
    finally:
        restarted.kill(signal.SIGTERM)


def test_duplicate_and_repeated_task_messages_change_nothing(
    api: Api, worker: Worker, audit_file: Path, redis_url: str
) -> None:
    from configsync.tasks import CATCH_UP, QUEUE, celery_app

    worker.start()
    owner = api.person("owner@example.com")
    writes(api, 6, owner)
    assert eventually(lambda: exactly_once(api.engine, audit_file, 6))
    before = [tuple(r) for r in audit_rows(api.engine)]
    celery_app.conf.broker_url = redis_url
    for _ in range(5):
        celery_app.send_task(CATCH_UP, queue=QUEUE)
    time.sleep(3)
    assert [tuple(r) for r in audit_rows(api.engine)] == before
    assert len(file_lines(audit_file)) == 6


def test_rebuild_gives_the_same_rows_and_status_shows_no_lag(
    api: Api, worker: Worker, audit_file: Path, worker_env: dict[str, str]
) -> None:
    from tests.conftest import cli

    worker.start()
    owner = api.person("owner@example.com")
    writes(api, 7, owner)
    assert eventually(lambda: exactly_once(api.engine, audit_file, 7))
    before = [tuple(r) for r in audit_rows(api.engine)]
    rebuilt = cli("projections", "rebuild", "audit", env=worker_env)
    assert rebuilt.returncode == 0 and "from 7 events" in rebuilt.stdout
    assert [tuple(r) for r in audit_rows(api.engine)] == before
    status = cli("projections", "status", "--json", env=worker_env)
    table = {p["name"]: p for p in json.loads(status.stdout)["projections"]}
    assert table["audit"]["lag"] == 0 and table["audit"]["position"] == 7
    assert table["current"]["lag"] == 0
    admin = api.person("admin@example.com", "admin")
    over_http = api.get("/v1/projections", headers=admin).json()
    assert {p["name"]: p["lag"] for p in over_http["projections"]} == {
        "current": 0,
        "audit": 0,
        "merkle": 0,  # the transparency log's tree, also applied by the worker
    }
    assert api.get("/v1/projections", headers=owner).status_code == 403


def test_a_running_worker_catches_up_events_whose_task_was_lost(
    pg: Engine, pg_url: str, worker: Worker, audit_file: Path
) -> None:
    worker.start()
    time.sleep(2)  # the worker is up and has done its start-up catch-up (of nothing)
    # These writes go through an API whose broker is dead: their tasks are lost. Only the
    # worker's periodic catch-up (every second here) can apply them.
    lost = make_api(
        pg_url, pg, redis_url=f"redis://127.0.0.1:{free_port()}/0", audit_log=str(audit_file)
    )
    api = next(lost)
    owner = api.person("owner@example.com")
    writes(api, 4, owner)
    assert eventually(lambda: exactly_once(pg, audit_file, 4), seconds=15)
    with pytest.raises(StopIteration):
        next(lost)


def test_no_secret_value_reaches_the_broker_the_worker_or_the_audit_file(
    api: Api, worker: Worker, audit_file: Path, redis_url: str
) -> None:
    """Every command Redis executes while secrets are written (task messages included) is
    watched: none carries a secret value, and the worker audits the writes from ciphertext."""
    import threading

    import redis

    seen: list[str] = []
    ready = threading.Event()
    stop = threading.Event()

    def watch() -> None:
        client = redis.Redis.from_url(redis_url)
        with client.monitor() as monitor:
            ready.set()
            for command in monitor.listen():
                seen.append(str(command.get("command", "")))
                if stop.is_set():
                    return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    assert ready.wait(10)
    worker.start()
    owner = api.person("owner@example.com")
    secrets = [f"s3cret-{i}-{os.getpid()}" for i in range(3)]
    for i, value in enumerate(secrets):
        response = api.put(
            "/v1/configs/pay/prod",
            headers=owner,
            json={"data": {"DB_PASSWORD": value, "N": i}, "reason": f"write {i}"},
        )
        assert response.status_code in (200, 201), response.text
    assert eventually(lambda: exactly_once(api.engine, audit_file, 3))
    stop.set()
    redis.Redis.from_url(redis_url).ping()  # one more command: the monitor sees it and stops
    thread.join(10)
    messages = "\n".join(seen)
    assert "catch_up" in messages  # the task messages went through Redis, and were watched
    text_of_file = audit_file.read_text()
    assert '"masked":true' in text_of_file
    for value in secrets:
        assert value not in messages and value not in text_of_file


def test_lag_rises_while_the_worker_is_stopped_and_readiness_says_so(
    pg: Engine, pg_url: str, redis_url: str, audit_file: Path, worker: Worker
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def audit_lag(api: Any) -> float:
        for family in text_string_to_metric_families(api.get("/metrics").text):
            for sample in family.samples:
                lag = sample.name == "configsync_projection_lag_events"
                if lag and sample.labels == {"name": "audit"}:
                    return sample.value
        raise AssertionError("no audit lag in /metrics")

    generator = make_api(
        pg_url, pg, redis_url=redis_url, audit_log=str(audit_file), ready_max_audit_lag_seconds=1
    )
    api = next(generator)
    try:
        assert api.get("/health/ready").status_code == 200
        owner = api.person("owner@example.com")
        writes(api, 3, owner)  # no worker runs: nothing audits them
        assert audit_lag(api) == 3
        time.sleep(1.2)
        ready = api.get("/health/ready")
        assert ready.status_code == 503
        assert "is the worker running" in ready.json()["checks"]["audit"]
        port = free_port()
        worker.start("--metrics-port", str(port))
        assert eventually(lambda: audit_lag(api) == 0)
        assert eventually(lambda: api.get("/health/ready").status_code == 200)
        assert api.get("/health/ready").json()["checks"]["audit"] == "ok"
        # The worker reports the same from a port of its own.
        import httpx

        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as own:
            assert eventually(lambda: _answers(own))
            assert audit_lag(own) == 0
    finally:
        generator.close()


def _answers(client: Any) -> bool:
    try:
        return bool(client.get("/metrics").status_code == 200)
    except Exception:
        return False


def test_the_worker_logs_json_lines_and_no_line_per_task_at_info(
    api: Api, worker: Worker, audit_file: Path, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    worker.start("--loglevel", "INFO", log=log)
    owner = api.person("owner@example.com")
    writes(api, 6, owner)
    assert eventually(lambda: exactly_once(api.engine, audit_file, 6))
    assert worker.process is not None
    worker.process.send_signal(signal.SIGTERM)  # as `docker stop` does: the main process only
    worker.process.wait(timeout=30)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert any(line["level"] == "INFO" for line in lines), lines  # start-up, connection
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    per_task = [
        line for line in lines if line["logger"] in ("celery.app.trace", "celery.worker.strategy")
    ]
    assert per_task == []


def test_a_burst_of_writes_sends_a_few_tasks_and_the_last_write_is_never_left_out(
    pg: Engine, pg_url: str, redis_url: str, audit_file: Path
) -> None:
    """The API sends one projection task for all the writes of a short interval (the worker's
    catch-up applies them all), and a write after the burst still gets a task of its own."""
    import redis

    from configsync.tasks import QUEUE, SEND_INTERVAL

    broker = redis.Redis.from_url(redis_url)
    for api in make_api(pg_url, pg, redis_url=redis_url, audit_log=str(audit_file)):
        dispatcher = api.client.app.state.runtime.dispatcher
        broker.delete(QUEUE)
        began = time.monotonic()
        for _ in range(2000):
            dispatcher(None)
        burst = time.monotonic() - began
        assert eventually(lambda: broker.llen(QUEUE) >= 1, 5)
        time.sleep(SEND_INTERVAL * 5)
        sent = broker.llen(QUEUE)
        assert 1 <= sent <= 2 + burst / SEND_INTERVAL  # not one per write
        dispatcher(None)  # one more write, after the burst
        assert eventually(lambda sent=sent: broker.llen(QUEUE) == sent + 1, 5)
