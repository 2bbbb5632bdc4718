"""The event pipeline under load, with a real worker (`configsync worker`) on Redis and PostgreSQL.

1. 1,000 writes through the API at 100 per second: audit lag, from the write's commit to its
   audit row, p50 and p99 (rows are watched every 2 ms).
2. A backlog of 50,000 events appended while no worker runs: the worker's catch-up rate.
Usage: python -m bench.pipeline [--writes N] [--backlog N]
Targets: p99 lag < 1 s; catch-up >= 5,000 events/s.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import redis
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from bench._common import fresh_database, percentile
from configsync.app import create_app
from configsync.auth.tokens import issue
from configsync.db import make_engine
from configsync.domain.events import CONFIG_CHANGED
from configsync.events import append
from configsync.settings import Settings

SECRET = "bench-secret-key-0123456789-0123456789-abcdef"
REDIS = os.environ.get("CONFIGSYNC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def start_worker(url: str, audit_log: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": REDIS,
        "CONFIGSYNC_AUDIT_LOG": audit_log,
        "SECRET_KEY": SECRET,
        "CONFIGSYNC_CATCH_UP_INTERVAL_SECONDS": "1",
    }
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("configsync")),
            "worker",
            "--concurrency",
            "1",
            "--loglevel",
            "WARNING",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def audited(engine: object) -> int:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        return int(conn.scalar(text("SELECT coalesce(max(position), 0) FROM audit_log")))


def lag_run(url: str, engine: object, writes: int, audit_log: str) -> None:
    app = create_app(
        Settings(database_url=url, redis_url=REDIS, secret_key=SECRET, audit_log=audit_log)
    )
    with engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(
            text(
                "INSERT INTO users (id, email, password_hash, role, is_active, created_at) "
                "VALUES ('bench', 'bench@example.com', 'x', 'user', true, now())"
            )
        )
    token, _ = issue("bench", "user", key=SECRET, minutes=60)
    headers = {"Authorization": f"Bearer {token}"}
    committed: dict[int, float] = {}
    seen: dict[int, float] = {}
    done = threading.Event()

    def watch() -> None:
        last = 0
        while not done.is_set() or last < writes:
            top = audited(engine)
            now = time.perf_counter()
            for position in range(last + 1, top + 1):
                seen[position] = now
            last = top
            if done.is_set() and time.perf_counter() > deadline:
                return
            time.sleep(0.002)

    deadline = float("inf")
    watcher = threading.Thread(target=watch)
    watcher.start()
    with TestClient(app) as client:
        start = time.perf_counter()
        for i in range(writes):
            due = start + i / 100
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            response = client.put(
                f"/v1/configs/svc{i % 20}/prod", headers=headers, json={"data": {"N": i}}
            )
            assert response.status_code in (200, 201), response.text
            committed[i + 1] = time.perf_counter()  # every write appends one event: position i + 1
        deadline = time.perf_counter() + 30
        done.set()
        watcher.join()
    lags = [(seen[p] - committed[p]) * 1000 for p in committed if p in seen]
    missing = writes - len(lags)
    print(
        f"audit lag over {writes} writes at 100/s: p50 {percentile(lags, 50):.0f} ms, "
        f"p99 {percentile(lags, 99):.0f} ms, max {max(lags):.0f} ms"
        + (f", {missing} not audited within 30 s" if missing else "")
    )


def backlog_run(url: str, engine: object, backlog: int, audit_log: str) -> None:
    factory = sessionmaker(bind=engine)  # type: ignore[call-overload]
    base = audited(engine)
    actor = {"actor": {"kind": "system", "id": "bench", "name": "bench"}}
    versions: dict[str, int] = {}
    began = time.perf_counter()
    written = 0
    while written < backlog:
        with factory() as session:
            for _ in range(min(2000, backlog - written)):
                stream = f"backlog{written % 500}/prod"
                version = versions.get(stream, 0)
                changes = [{"op": "replace", "path": ["N"], "value": written, "old": written - 1}]
                append(
                    session,
                    stream,
                    version,
                    {
                        "action": "updated",
                        "changes": changes,
                        "reason": None,
                        "rollback_of": None,
                        "deleted": False,
                    },
                    actor,
                    type=CONFIG_CHANGED,
                )
                versions[stream] = version + 1
                written += 1
            session.commit()
    print(f"appended a backlog of {backlog} events in {time.perf_counter() - began:.1f} s")
    target = base + backlog
    worker = start_worker(url, audit_log)
    try:
        began = time.perf_counter()
        first = None
        while audited(engine) < target:
            if first is None and audited(engine) > base:
                first = time.perf_counter()
            time.sleep(0.01)
        finished = time.perf_counter()
        total = finished - began
        working = finished - (first or began)
        print(
            f"catch-up of {backlog} events: {backlog / working:,.0f} events/s "
            f"({working:.1f} s from the first row; {total:.1f} s including worker start-up)"
        )
    finally:
        stop(worker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--backlog", type=int, default=50_000)
    args = parser.parse_args()
    redis.Redis.from_url(REDIS).flushdb()
    with fresh_database() as url, TemporaryDirectory() as tmp:
        engine = make_engine(url)
        audit_log = f"{tmp}/audit.log"
        worker = start_worker(url, audit_log)
        try:
            time.sleep(3)  # let the worker connect
            lag_run(url, engine, args.writes, audit_log)
        finally:
            stop(worker)
        backlog_run(url, engine, args.backlog, audit_log)
        engine.dispose()


if __name__ == "__main__":
    main()
