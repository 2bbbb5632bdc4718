"""The transparency log: what keeping the tree costs appends, how fast proofs and signatures are,
how fast an auditor verifies an export offline.

- appends (16 writer threads, group commit, PostgreSQL) alone, and with the Merkle projection
  catching up beside them the whole time, in the same run: the ratio;
- an inclusion and a consistency proof on a tree of --leaves leaves (default 1,000,000): p50
  and p99 over 200 random proofs each;
- signing a checkpoint of that tree;
- `configsync.logverify` recomputing the chain and the tree of --export events (100,000).
Usage: python -m bench.log [--leaves N] [--export N]
Targets: appends with the tree >= 0.9x without; proofs p50 <= 10 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import random
import threading
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from bench._common import fresh_database, percentile, reset
from configsync import logverify
from configsync.audit.log import LogSigner, sign_checkpoint
from configsync.db import make_engine, make_session_factory, unit_of_work, upsert
from configsync.domain.events import CONFIG_CHANGED
from configsync.events import NewEvent, StoredEvent, append_batch, format_instant
from configsync.events.group import GroupCommit
from configsync.settings import new_log_key
from projections import merkle
from projections.base import CheckpointRow, catch_up

ACTOR = {"actor": {"kind": "user", "id": "bench", "name": "bench"}}


def _keep_tree(url: str, done: Any) -> None:
    sessions = make_session_factory(make_engine(url))
    while not done.is_set():
        catch_up(sessions, merkle.MerkleProjection(), batch_size=2000)
        time.sleep(0.05)


def _append(session: Any, items: Any) -> Any:
    return append_batch(session, list(items))


def appends(url: str, per_writer: int, with_tree: bool) -> float:
    engine = make_engine(url)
    reset(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM merkle_nodes"))
    sessions = make_session_factory(engine)
    group: GroupCommit[NewEvent, StoredEvent] = GroupCommit.for_database(url, _append)
    done = multiprocessing.Event()

    def writer(w: int) -> None:
        for i in range(per_writer):
            data = {"changes": [{"op": "add", "path": ["N"], "value": i}], "deleted": False}
            group.submit(NewEvent(f"w{w}/prod", i, data, ACTOR, type=CONFIG_CHANGED))

    # The tree is kept by the worker, a process of its own: so it is here.
    keeper = multiprocessing.Process(target=_keep_tree, args=(url, done)) if with_tree else None
    if keeper:
        keeper.start()
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(16)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rate = 16 * per_writer / (time.perf_counter() - began)
    done.set()
    del sessions
    if keeper:
        keeper.join()
    group.close()
    engine.dispose()
    return rate


def big_tree(url: str, leaves: int) -> None:
    """A tree of `leaves` synthetic leaves, stored as the projection stores one."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM merkle_nodes"))
    sessions = make_session_factory(engine)
    projection = merkle.MerkleProjection()
    now = datetime.now(UTC)
    step = 20_000
    for start in range(0, leaves, step):
        batch = [
            StoredEvent(p, "", "s", p, "T", {}, {}, now, "", hashlib.sha256(b"%d" % p).hexdigest())
            for p in range(start + 1, min(leaves, start + step) + 1)
        ]
        with unit_of_work(sessions) as session:
            projection.apply(session, batch)
    with unit_of_work(sessions) as session:
        upsert(
            session,
            CheckpointRow,
            {"name": merkle.NAME, "position": leaves, "updated_at": now},
            key=["name"],
            update=["position"],
        )
    engine.dispose()


def proofs(url: str, leaves: int) -> None:
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    rng = random.Random(7)
    with sessions() as session:
        for label, make in (
            ("inclusion", lambda: merkle.inclusion_proof(session, rng.randint(1, leaves), leaves)),
            (
                "consistency",
                lambda: merkle.consistency_proof(session, rng.randint(1, leaves), leaves),
            ),
        ):
            times = []
            for _ in range(200):
                began = time.perf_counter()
                make()
                times.append((time.perf_counter() - began) * 1000)
            print(
                f"  {label} proof, {leaves:,} leaves: p50 {percentile(times, 50):.2f} ms, "
                f"p99 {percentile(times, 99):.2f} ms (target p50 <= 10 ms)"
            )
    signer = LogSigner("bench.example/log", new_log_key())
    with unit_of_work(sessions) as session:
        began = time.perf_counter()
        sign_checkpoint(session, signer)
        took = (time.perf_counter() - began) * 1000
        print(f"  signing a checkpoint of {leaves:,} leaves: {took:.1f} ms")
    engine.dispose()


def offline(count: int) -> None:
    events: list[dict[str, Any]] = []
    prev = logverify.GENESIS
    now = format_instant(datetime.now(UTC))
    for p in range(1, count + 1):
        event = {
            "position": p,
            "event_id": f"{p:032x}",
            "stream": f"s{p % 100}/prod",
            "version": p // 100 + 1,
            "type": "ConfigChanged",
            "data": {"changes": [{"op": "add", "path": ["N"], "value": p}]},
            "metadata": ACTOR,
            "recorded_at": now,
            "prev_hash": prev,
        }
        event["hash"] = prev = logverify.chain_hash(prev, event)
        events.append(event)
    began = time.perf_counter()
    root = logverify.root_of(logverify.leaves_of(events))
    took = time.perf_counter() - began
    rate = count / took
    print(
        f"  offline verification of {count:,} events: {rate:,.0f} events/s (root {root.hex()[:12]})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--export", type=int, default=100_000)
    parser.add_argument("--per-writer", type=int, default=250)
    args = parser.parse_args()
    with fresh_database() as url:
        alone = appends(url, args.per_writer, with_tree=False)
        kept = appends(url, args.per_writer, with_tree=True)
        print(f"  appends, 16 writers, group commit: {alone:,.0f}/s alone, {kept:,.0f}/s with the")
        print(f"  tree kept beside them; ratio {kept / alone:.2f} (target >= 0.9)")
        reset(make_engine(url))
        began = time.perf_counter()
        big_tree(url, args.leaves)
        print(f"  built a tree of {args.leaves:,} leaves in {time.perf_counter() - began:.0f} s")
        proofs(url, args.leaves)
    offline(args.export)


if __name__ == "__main__":
    main()
