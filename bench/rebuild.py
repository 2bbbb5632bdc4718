"""Replay throughput: rebuild the `current` projection from 100,000 events on PostgreSQL.

Usage: python bench/rebuild.py [--events N] [--streams S]
Target on the 2-core machine: >= 20,000 events/s.
"""

from __future__ import annotations

import argparse
import random
import time

from sqlalchemy.orm import sessionmaker

from bench._common import fresh_database
from configsync.db import make_engine
from configsync.domain.documents import compute_changes
from configsync.domain.events import CONFIG_CHANGED
from configsync.events import NewEvent, append_batch
from projections import current

ACTOR = {"actor": {"kind": "user", "id": "bench", "name": "bench"}, "request_id": None}


def seed(factory: sessionmaker, events: int, streams: int) -> None:  # type: ignore[type-arg]
    """Realistic events: each stream's document has 20 keys, each write changes one to three."""
    rng = random.Random(7)
    documents = {f"svc-{s}/prod": {f"KEY_{k}": k for k in range(20)} for s in range(streams)}
    versions = dict.fromkeys(documents, 0)
    names = list(documents)
    written = 0
    while written < events:
        batch: list[NewEvent] = []
        with factory() as session:
            for _ in range(min(2000, events - written)):
                stream = names[written % streams]
                old = documents[stream]
                new = dict(old)
                for _ in range(rng.randint(1, 3)):
                    new[f"KEY_{rng.randrange(25)}"] = rng.choice(
                        [rng.random(), "text", None, [1, 2]]
                    )
                data = {
                    "changes": compute_changes(old, new),
                    "reason": None,
                    "rollback_of": None,
                    "deleted": False,
                }
                batch.append(NewEvent(stream, versions[stream], data, ACTOR, type=CONFIG_CHANGED))
                versions[stream] += 1
                documents[stream] = new
                written += 1
            append_batch(session, batch)
            session.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--streams", type=int, default=1_000)
    args = parser.parse_args()
    with fresh_database() as url:
        engine = make_engine(url)
        factory = sessionmaker(bind=engine)
        began = time.perf_counter()
        seed(factory, args.events, args.streams)
        print(
            f"seeded {args.events} events on {args.streams} streams "
            f"in {time.perf_counter() - began:.1f} s"
        )
        for trial in range(1, 3):
            with factory() as session:
                began = time.perf_counter()
                replayed = current.rebuild(session)
                session.commit()
                seconds = time.perf_counter() - began
            print(
                f"rebuild current, run {trial}: {replayed} events in {seconds:.2f} s "
                f"= {replayed / seconds:,.0f} events/s"
            )
        with factory() as session:
            assert not current.verify(session), "rebuilt projection differs from the events"
        engine.dispose()


if __name__ == "__main__":
    main()
