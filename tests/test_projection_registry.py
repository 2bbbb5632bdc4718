"""One registry of projections; each handles its own event types and passes over others."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from configsync.db import unit_of_work
from configsync.domain.events import SECRETS_REVEALED, SecretsRevealed
from configsync.events import append, read_after
from projections import audit, current
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


def test_audit_rows_hold_each_events_row_values_exactly(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    """Whichever way the audit projection writes its rows (arrays at driver level on
    PostgreSQL, SQLAlchemy's multi-row VALUES elsewhere), every column reads back as
    row_values made it: a reveal's null reason, non-ASCII text, the instant to the microsecond."""
    _history(sessions)
    revealed = SecretsRevealed("svc0", "prod", 1, 2, [["db", "password"]], None)
    actor = {"actor": {"kind": "user", "id": "u1", "name": "Zoë <z@example.com>"}}
    with unit_of_work(sessions) as s:
        append(s, "svc0/prod/reveals", 0, revealed.to_data(), actor, type=SECRETS_REVEALED)
    assert catch_up_all(sessions)["audit"] == 9
    with sessions() as s:
        expected = [
            audit.row_values(e) for e in read_after(s, 0) if e.type in audit.AuditProjection.handles
        ]
        stored = s.execute(select(audit.AuditRow).order_by(audit.AuditRow.position)).scalars()
        found = [{name: getattr(row, name) for name in expected[0]} for row in stored]
    assert found == expected
    assert found[-1]["reason"] is None and found[-1]["actor_name"] == "Zoë <z@example.com>"
