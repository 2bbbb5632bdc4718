"""Shared set-up for the benchmarks: a throwaway PostgreSQL database, migrated and empty."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from configsync.db import make_engine
from configsync.migrations import upgrade

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/configsync_bench"


def bench_database_url() -> str:
    return os.environ.get("CONFIGSYNC_BENCH_DATABASE_URL", DEFAULT_URL)


@contextmanager
def fresh_database(url: str | None = None) -> Iterator[str]:
    """Create (or re-create) the bench database, migrate it, and drop it afterwards."""
    url = url or bench_database_url()
    target = make_url(url)
    admin = make_engine(
        target.set(database="postgres").render_as_string(hide_password=False),
        isolation_level="AUTOCOMMIT",
    )
    name = target.database
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    upgrade(url)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def reset(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE events DISABLE TRIGGER USER"))
        conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        conn.execute(text("TRUNCATE events, config_current, projection_checkpoints CASCADE"))
        conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))
        conn.execute(text("ALTER TABLE events ENABLE TRIGGER USER"))


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    start = time.perf_counter()
    count = fn()
    return count, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# The benchmarks' master key for secrets: the seeding process and the servers it starts share it.
MASTER_KEY = "YmVuY2gtbWFzdGVyLWtleS0wMTIzNDU2Nzg5YWJjZGU="


def document(*, secrets: bool = False) -> dict[str, object]:
    """A ~4 KB config: the size of a typical service's settings. With `secrets`, about a fifth
    of its keys are secret by name (`…_TOKEN`): 12 of 65, sealed when stored."""
    doc: dict[str, object] = {
        "API_URL": "https://api.example.com/v2",
        "TIMEOUT": 30,
        "RETRIES": 3,
        "FEATURE_FLAGS": {f"flag_{i}": i % 2 == 0 for i in range(20)},
        "DATABASE": {"host": "db.internal", "port": 5432, "pool": {"min": 2, "max": 20}},
    }
    for i in range(60):
        name = f"SETTING_{i:02d}" + ("_TOKEN" if secrets and i % 5 == 0 else "")
        doc[name] = f"value-{i}-" + "x" * 30
    return doc
