"""Pooled PostgreSQL connections are pinged before use only after sitting idle (configsync.db):
no round trip on the checkouts of a busy process, and a connection that died while idle is still
replaced before a request sees it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from configsync import db

pytestmark = pytest.mark.postgres


def _counting_pings(engine: Engine) -> list[int]:
    pings: list[int] = []
    ping = engine.dialect.do_ping

    def counted(connection: Any) -> bool:
        pings.append(1)
        return ping(connection)

    engine.dialect.do_ping = counted  # type: ignore[method-assign]
    return pings


def _backend(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text("SELECT pg_backend_pid()")))


def _terminate(pg: Engine, pid: int) -> None:
    with pg.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


def test_a_busy_connection_is_not_pinged_at_every_checkout(pg_url: str, pg: Engine) -> None:
    engine = db.make_engine(pg_url, pool_size=1, max_overflow=0)
    pings = _counting_pings(engine)
    first = _backend(engine)
    assert [_backend(engine) for _ in range(20)] == [first] * 20
    assert pings == []
    engine.dispose()


def test_a_connection_that_died_while_idle_is_replaced_before_use(
    pg_url: str, pg: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = db.make_engine(pg_url, pool_size=1, max_overflow=0)
    pings = _counting_pings(engine)
    first = _backend(engine)
    _terminate(pg, first)
    monkeypatch.setattr(db, "IDLE_BEFORE_PING", 0.0)  # it has now idled long enough
    second = _backend(engine)  # no error: the ping found it dead, a new one was made
    assert second != first and len(pings) == 1
    engine.dispose()


def test_without_the_idle_ping_a_dead_connection_fails_one_use_only(
    pg_url: str, pg: Engine
) -> None:
    """What the ping after idling guards against, shown: (used just now, so not pinged) a
    connection killed under the pool fails its next use, and the pool recovers at once."""
    engine = db.make_engine(pg_url, pool_size=1, max_overflow=0)
    first = _backend(engine)
    _terminate(pg, first)
    with pytest.raises(DBAPIError) as failed:
        _backend(engine)
    assert failed.value.connection_invalidated
    assert _backend(engine) != first
    engine.dispose()
