"""One registry of projections; each handles its own event types and passes over others."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from configsync.db import unit_of_work
from configsync.events import append
from projections import current
from projections.registry import ASYNCHRONOUS, INLINE, NAMES, catch_up_all, rebuild_one, status_all
from tests.test_current_projection import _history, _rows


def _table(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(text(sql)).all()


def test_every_projection_is_listed_once_and_says_what_it_handles() -> None:
    assert NAMES == ("current", "snapshots", "audit", "merkle")
    config_only = [p for p in (*INLINE, *ASYNCHRONOUS) if p.name not in ("merkle", "audit")]
    assert all(p.handles == frozenset({"ConfigChanged"}) for p in config_only)
    audit = next(p for p in ASYNCHRONOUS if p.name == "audit")
    assert audit.handles == frozenset({"ConfigChanged", "SecretsRevealed"})  # reveals are audited
    assert next(p for p in ASYNCHRONOUS if p.name == "merkle").handles is None  # every type


def test_a_log_holding_an_unknown_event_type_rebuilds_and_catches_up(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    _history(sessions)
    with unit_of_work(sessions) as s:  # a type no projection of this version knows
        append(s, "reveals/svc0", 0, {"anything": [1, 2]}, {}, type="SecretRevealed")
        append(s, "elsewhere/x", 0, {"no": "changes key"}, {}, type="Unheard")
    assert catch_up_all(sessions) == {"audit": 10, "merkle": 10}  # read past all ten
    audit_rows = _table(engine, "SELECT position, action FROM audit_log ORDER BY position")
    assert [row.position for row in audit_rows] == list(range(1, 9))  # rows for its own eight
    config_rows = _rows(engine)

    for name in NAMES:
        rebuild_one(sessions, name)

    assert _rows(engine) == config_rows
    assert _table(engine, "SELECT position, action FROM audit_log ORDER BY position") == (
        audit_rows
    )
    with sessions() as s:
        assert current.verify(s) == []
        # Checkpoints move past events a projection does not handle: nothing is "behind".
        assert {row.name: row.lag for row in status_all(s)}["audit"] == 0
