"""Append throughput on PostgreSQL: 1 writer, 16 writers on distinct streams, 16 on one stream.

Each append is its own transaction (lock, expected-version check, hash chain, insert, commit),
as a write through the API is. Usage: python bench/append.py [--events N]
Target on the 2-core machine: >= 1,500 appends/s with 16 writers on distinct streams.
"""

from __future__ import annotations

import argparse
import multiprocessing
import threading
import time
from typing import Any

from sqlalchemy.orm import sessionmaker

from bench._common import fresh_database, reset, timed
from configsync.configs import service
from configsync.configs.service import SYSTEM, WriteContext
from configsync.db import make_engine, unit_of_work
from configsync.errors import VersionConflict
from configsync.events import append

ACTOR = {"actor": {"kind": "user", "id": "bench", "name": "bench"}}


def _data(i: int) -> dict[str, object]:
    changes = [{"op": "replace", "path": ["COUNTER"], "value": i, "old": i - 1}]
    return {"changes": changes, "reason": None, "rollback_of": None, "deleted": False}


def run_writers(factory: sessionmaker, writers: int, per_writer: int, same_stream: bool) -> int:  # type: ignore[type-arg]
    retries = [0] * writers

    def writer(w: int) -> None:
        stream = "bench/shared" if same_stream else f"bench-{w}/prod"
        done = 0
        expected = 0
        while done < per_writer:
            with factory() as session:
                try:
                    event = append(session, stream, expected, _data(done), ACTOR)
                    session.commit()
                    done += 1
                    expected = event.version
                except VersionConflict as conflict:
                    session.rollback()
                    retries[w] += 1
                    expected = conflict.actual

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if same_stream:
        print(f"    (conflicts retried: {sum(retries)})")
    return writers * per_writer


def _process_writer(url: str, w: int, per_writer: int, start: Any) -> None:
    engine = make_engine(url, pool_size=1, max_overflow=0)
    factory = sessionmaker(bind=engine)
    start.wait()
    stream, expected = f"bench-{w}/prod", 0
    for i in range(per_writer):
        with factory() as session:
            expected = append(session, stream, expected, _data(i), ACTOR).version
            session.commit()
    engine.dispose()


def run_process_writers(url: str, writers: int, per_writer: int) -> tuple[int, float]:
    """Writers as separate processes, as separate API workers or clients are (no shared GIL)."""
    context = multiprocessing.get_context("fork")
    start = context.Event()
    procs = [
        context.Process(target=_process_writer, args=(url, w, per_writer, start))
        for w in range(writers)
    ]
    for p in procs:
        p.start()
    time.sleep(1.0)  # let every process connect before the clock starts
    began = time.perf_counter()
    start.set()
    for p in procs:
        p.join()
    return writers * per_writer, time.perf_counter() - began


def run_service_writers(factory: sessionmaker, writers: int, per_writer: int) -> int:  # type: ignore[type-arg]
    """The whole write path of PUT: stream lock, read current, diff, append, inline projection."""
    ctx = WriteContext(actor=SYSTEM)

    def writer(w: int) -> None:
        for i in range(per_writer):
            with unit_of_work(factory) as session:
                document = {"COUNTER": i, "API_URL": "https://api.example.com", "TIMEOUT": 30}
                service.replace(session, f"bench-{w}", "prod", document, ctx)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return writers * per_writer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=4000, help="events per scenario")
    args = parser.parse_args()
    with fresh_database() as url:
        engine = make_engine(url, pool_size=20, max_overflow=5)
        factory = sessionmaker(bind=engine)
        scenarios = [
            ("1 writer", 1, False),
            ("16 writer threads, distinct streams", 16, False),
            ("16 writer threads, one stream, retry on conflict", 16, True),
        ]
        print(f"append benchmark, PostgreSQL, {args.events} events per scenario")
        for label, writers, same in scenarios:
            reset(engine)
            # The one-stream case is a retry storm by design; a tenth of the events shows its rate.
            per_writer = max(1, args.events // writers // (10 if same else 1))
            count, seconds = timed(
                lambda w=writers, p=per_writer, s=same: run_writers(factory, w, p, s)
            )
            print(f"  {label:45s} {count / seconds:10.0f} events/s  ({count} in {seconds:.2f} s)")
        reset(engine)
        count, seconds = run_process_writers(url, 16, max(1, args.events // 16))
        label = "16 writer processes, distinct streams"
        print(f"  {label:45s} {count / seconds:10.0f} events/s  ({count} in {seconds:.2f} s)")
        reset(engine)
        per_writer = max(1, args.events // 16)
        count, seconds = timed(lambda: run_service_writers(factory, 16, per_writer))
        label = "16 writers, whole PUT write path (service)"
        print(f"  {label:45s} {count / seconds:10.0f} events/s  ({count} in {seconds:.2f} s)")
        engine.dispose()


if __name__ == "__main__":
    main()
