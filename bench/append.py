"""Append throughput on PostgreSQL: 1 writer, 16 writers on distinct streams, 16 on one stream.

Every append takes the global append lock, checks its expected version, links into the hash
chain and inserts; the lock is held to the commit. Writers either commit each append alone, or
hand it to the store's group commit (configsync.events.group), which is what the API does on
PostgreSQL: appends of concurrent writers then share transactions and commits.
Usage: python -m bench.append [--events N]
Target on the 2-core machine: >= 1,500 appends/s with 16 writers on distinct streams.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import sessionmaker

from bench._common import document, fresh_database, reset, timed
from configsync.configs import commands
from configsync.configs.commands import WriteContext, WritePath, record
from configsync.db import make_engine, make_session_factory, unit_of_work
from configsync.domain.actor import SYSTEM
from configsync.domain.events import CONFIG_CHANGED
from configsync.errors import VersionConflict
from configsync.events import NewEvent, StoredEvent, append, append_batch
from configsync.events.group import GroupCommit
from configsync.secrets.vault import Vault

VAULT = Vault.ephemeral()

ACTOR = {"actor": {"kind": "user", "id": "bench", "name": "bench"}}


def _data(i: int) -> dict[str, object]:
    changes = [{"op": "replace", "path": ["COUNTER"], "value": i, "old": i - 1}]
    return {"changes": changes, "reason": None, "rollback_of": None, "deleted": False}


def run_writers(
    factory: sessionmaker,  # type: ignore[type-arg]
    writers: int,
    per_writer: int,
    same_stream: bool,
    group: GroupCommit[NewEvent, StoredEvent] | None = None,
    retries: list[int] | None = None,
) -> int:
    """Appends `per_writer` events per writer; conflicts retried are added to `retries[0]`."""
    conflicts = [0] * writers

    def append_one(stream: str, expected: int, i: int) -> StoredEvent:
        if group is not None:
            return group.submit(NewEvent(stream, expected, _data(i), ACTOR, type=CONFIG_CHANGED))
        with factory() as session:
            event = append(session, stream, expected, _data(i), ACTOR, type=CONFIG_CHANGED)
            session.commit()
            return event

    def writer(w: int) -> None:
        stream = "bench/shared" if same_stream else f"bench-{w}/prod"
        done = 0
        expected = 0
        while done < per_writer:
            try:
                expected = append_one(stream, expected, done).version
                done += 1
            except VersionConflict as conflict:
                conflicts[w] += 1
                expected = conflict.actual

    _in_threads(writer, writers)
    if retries is not None:
        retries[0] += sum(conflicts)
    return writers * per_writer


def _process_writer(url: str, w: int, per_writer: int, start: Any) -> None:
    engine = make_engine(url, pool_size=1, max_overflow=0)
    factory = sessionmaker(bind=engine)
    start.wait()
    stream, expected = f"bench-{w}/prod", 0
    for i in range(per_writer):
        with factory() as session:
            expected = append(
                session, stream, expected, _data(i), ACTOR, type=CONFIG_CHANGED
            ).version
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


def run_service_writers(
    factory: sessionmaker,  # type: ignore[type-arg]
    writers: int,
    per_writer: int,
    path: WritePath,
) -> int:
    """The whole write path of PUT: stream lock, read current, diff, append, inline projections."""
    ctx = WriteContext(vault=VAULT, actor=SYSTEM, path=path)

    def writer(w: int) -> None:
        for i in range(per_writer):
            with unit_of_work(factory) as session:
                document = {"COUNTER": i, "API_URL": "https://api.example.com", "TIMEOUT": 30}
                commands.replace(session, f"bench-{w}", "prod", document, ctx)

    return _in_threads(writer, writers) * per_writer


def run_document_writers(
    factory: sessionmaker,  # type: ignore[type-arg]
    writers: int,
    per_writer: int,
    path: WritePath,
    *,
    secrets: bool,
) -> int:
    """PUT's write path with the ~4 KB document of bench/read.py; each write changes a plain
    value and one of the keys that are secret in the `secrets` variant (sealed then)."""
    ctx = WriteContext(vault=VAULT, actor=SYSTEM, path=path)
    base = document(secrets=secrets)
    rotating = [k for k in base if k.startswith("SETTING_") and int(k[8:10]) % 5 == 0]

    def writer(w: int) -> None:
        for i in range(per_writer):
            doc = dict(base)
            doc["RETRIES"] = i
            doc[rotating[i % len(rotating)]] = f"rotated-{i}"
            with unit_of_work(factory) as session:
                commands.replace(session, f"doc-{w}", "prod", doc, ctx)

    return _in_threads(writer, writers) * per_writer


def _in_threads(writer: Callable[[int], None], writers: int) -> int:
    """Run `writer(0)` … `writer(writers - 1)` in threads at once; returns `writers`."""
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return writers


def _report(label: str, count: int, seconds: float, group: GroupCommit[Any, Any] | None) -> None:
    per_commit = f", {group.items / group.transactions:.1f} per commit" if group else ""
    print(
        f"  {label:52s} {count / seconds:8.0f} events/s  ({count} in {seconds:.2f} s{per_commit})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=4000, help="events per scenario")
    args = parser.parse_args()
    with fresh_database() as url:
        engine = make_engine(url, pool_size=20, max_overflow=5)
        factory = make_session_factory(engine)
        per_writer = max(1, args.events // 16)
        print(f"append benchmark, PostgreSQL, {args.events} events per scenario")
        scenarios = [
            ("1 writer, a commit per append", 1, args.events, False, False),
            ("16 writer threads, distinct streams, group commit", 16, per_writer, False, True),
            ("16 writer threads, distinct streams, a commit each", 16, per_writer, False, False),
            # A retry storm by design; a tenth of the events shows its rate.
            ("16 writer threads, one stream, retry on conflict", 16, per_writer // 10, True, True),
        ]
        rates: dict[str, float] = {}
        for label, writers, count, same, grouped in scenarios:
            reset(engine)
            group = GroupCommit.for_database(url, append_batch) if grouped else None
            retries = [0]
            total, seconds = timed(
                lambda w=writers, c=count, s=same, g=group, r=retries: run_writers(  # type: ignore[misc]
                    factory, w, c, s, g, r
                )
            )
            _report(label, total, seconds, group)
            if same:
                print(f"    (conflicts retried: {retries[0]})")
            rates[label] = total / seconds
            if group is not None:
                group.close()
        grouped_rate, alone_rate = (rates[label] for label, *_ in scenarios[1:3])
        print(f"    (group commit vs a commit each, same run: {grouped_rate / alone_rate:.2f}x)")
        reset(engine)
        total, seconds = run_process_writers(url, 16, per_writer)
        _report("16 writer processes, distinct streams, a commit each", total, seconds, None)
        for grouped in (True, False):
            reset(engine)
            group = GroupCommit.for_database(url, record) if grouped else None
            sessions = make_session_factory(engine)
            path = WritePath(group=group)
            total, seconds = timed(lambda: run_service_writers(sessions, 16, per_writer, path))  # noqa: B023
            how = "group commit" if grouped else "a commit each"
            _report(f"16 writers, whole PUT write path, {how}", total, seconds, group)
            if group is not None:
                group.close()
        # Secrets: the same 4 KB document with and without a fifth of its keys secret, each
        # write sealing one; alternated twice, so that the machine's drift falls on both.
        secret_rates: dict[bool, list[float]] = {False: [], True: []}
        for secrets in (False, True, True, False):
            reset(engine)
            group = GroupCommit.for_database(url, record)
            sessions = make_session_factory(engine)
            path = WritePath(group=group)
            total, seconds = timed(
                functools.partial(
                    run_document_writers, sessions, 16, per_writer, path, secrets=secrets
                )
            )
            label = "a fifth secret" if secrets else "no secrets"
            _report(f"16 writers, PUT path, 4 KB document, {label}", total, seconds, group)
            secret_rates[secrets].append(total / seconds)
            group.close()
        with_secrets = sum(secret_rates[True]) / 2
        without = sum(secret_rates[False]) / 2
        ratio = with_secrets / without
        print(f"    (with secrets vs without, same run: {ratio:.3f}x; target >= 0.85)")
        engine.dispose()


if __name__ == "__main__":
    main()
