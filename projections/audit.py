"""The audit log: one row per event, exactly once, and the same as JSON lines in a file.

The table is applied by the projection runner (projections.base.catch_up): rows and checkpoint
commit together. The file is its own consumer of the table: it resumes from the last position
it holds, so a crash mid-write can neither skip nor repeat a line (a torn last line is cut off
and written again).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Index,
    Integer,
    String,
    Table,
    Text,
    bindparam,
    delete,
    insert,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from configsync.db import Base, UTCDateTime
from configsync.domain.events import (
    CONFIG_CHANGED,
    REVEALED,
    SECRETS_REVEALED,
    ConfigChanged,
    SecretsRevealed,
    split_stream,
    summarize,
)
from configsync.domain.secrets import mask
from configsync.events import StoredEvent, format_instant
from configsync.events.canonical import canonical_json, loads
from configsync.events.models import EventRow

NAME = "audit"


class AuditRow(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_service", "service", "environment"),)

    position: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(64))
    actor_name: Mapped[str] = mapped_column(String(320), index=True)
    service: Mapped[str] = mapped_column(String(63))
    environment: Mapped[str] = mapped_column(String(63))
    version: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    changes: Mapped[str] = mapped_column(Text)  # canonical JSON
    hash: Mapped[str] = mapped_column(String(64))


class RebuildRow(Base):
    """Present only inside a rebuild's own transaction: lets it empty an append-only table."""

    __tablename__ = "projection_rebuilds"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)


def row_values(event: StoredEvent) -> dict[str, Any]:
    """An event's audit row. Secret values are masked: the audit trail shows that a secret
    changed (its fingerprint did) and never what it holds, for every reader."""
    actor = event.metadata.get("actor") or {}
    row = {
        "position": event.position,
        "event_id": event.event_id,
        "recorded_at": event.recorded_at,
        "actor_kind": str(actor.get("kind", "")),
        "actor_id": str(actor.get("id", "")),
        "actor_name": str(actor.get("name", "")),
        "hash": event.hash,
    }
    if event.type == SECRETS_REVEALED:
        revealed = SecretsRevealed.from_data(event.data)
        return row | {
            "service": revealed.service,
            "environment": revealed.environment,
            "version": revealed.to_version,
            "action": REVEALED,
            "summary": revealed.summary(),
            "reason": revealed.reason,
            "changes": "[]",
        }
    service, environment = split_stream(event.stream)
    payload = ConfigChanged.from_data(event.data, event.version)
    return row | {
        "service": service,
        "environment": environment,
        "version": event.version,
        "action": payload.action,
        "summary": summarize(payload.changes),
        "reason": payload.reason,
        "changes": canonical_json(mask(payload.changes)),
    }


# row_values's columns and their PostgreSQL types, for AuditProjection.apply.
_AUDIT_COLUMNS = (
    ("position", "bigint"),
    ("event_id", "text"),
    ("recorded_at", "timestamptz"),
    ("actor_kind", "text"),
    ("actor_id", "text"),
    ("actor_name", "text"),
    ("service", "text"),
    ("environment", "text"),
    ("version", "integer"),
    ("action", "text"),
    ("summary", "text"),
    ("reason", "text"),
    ("changes", "text"),
    ("hash", "text"),
)
_INSERT_POSTGRES = (
    f"INSERT INTO audit_log ({', '.join(name for name, _ in _AUDIT_COLUMNS)})"
    f" SELECT * FROM unnest({', '.join(f'%s::{kind}[]' for _, kind in _AUDIT_COLUMNS)})"
)


def as_item(row: Any) -> dict[str, Any]:
    """An audit row (an AuditRow, or a row of its table's columns) as the API and the file
    show it."""
    return {
        "position": row.position,
        "event_id": row.event_id,
        "recorded_at": format_instant(row.recorded_at),
        "actor": {"kind": row.actor_kind, "id": row.actor_id, "name": row.actor_name},
        "service": row.service,
        "environment": row.environment,
        "version": row.version,
        "action": row.action,
        "summary": row.summary,
        "reason": row.reason,
        "changes": loads(row.changes),
        "hash": row.hash,
    }


class AuditProjection:
    name = NAME
    handles = frozenset({CONFIG_CHANGED, SECRETS_REVEALED})
    needs_payload = True

    def apply(self, session: Session, events: Sequence[StoredEvent]) -> None:
        # A plain INSERT: the runner's checkpoint lock means a position is never applied twice,
        # and if that ever broke, the primary key would fail the batch loudly instead of
        # hiding it.
        rows = [row_values(e) for e in events]
        connection = session.connection()
        if connection.dialect.name == "postgresql":
            # One array per column, sent at driver level: SQLAlchemy's multi-row VALUES
            # (its parameters built row by row) was a fifth of the worker's CPU under load.
            columns = tuple([row[name] for row in rows] for name, _ in _AUDIT_COLUMNS)
            connection.exec_driver_sql(_INSERT_POSTGRES, columns)
            return
        # Elsewhere SQLAlchemy batches them into multi-row VALUES, compiled once, not per batch.
        table = AuditRow.__table__
        assert isinstance(table, Table)
        connection.execute(insert(table), rows)

    def clear(self, session: Session) -> None:
        # audit_log is append-only (migration 0006) except inside a rebuild, which this
        # transaction declares with a row in projection_rebuilds that no other one can see.
        session.execute(insert(RebuildRow).values(name=NAME))
        session.execute(delete(AuditRow))
        session.execute(delete(RebuildRow).where(RebuildRow.name == NAME))


def first_mismatch(session: Session) -> int | None:
    """The first audit row whose hash is not its event's (or whose event is gone), or None."""
    found = session.scalar(
        select(AuditRow.position)
        .outerjoin(EventRow, EventRow.position == AuditRow.position)
        .where(EventRow.hash.is_distinct_from(AuditRow.hash))
        .order_by(AuditRow.position)
        .limit(1)
    )
    return int(found) if found is not None else None


# Built once, and read as plain rows (their columns are named as AuditRow's attributes, which is
# all `as_item` reads): the worker runs it for every catch-up task, where loading ORM instances
# was a sixth of its CPU per write (py-spy, 2026-12-02).
_ROWS_AFTER = (
    select(*AuditRow.__table__.columns)
    .where(AuditRow.position > bindparam("after"))
    .order_by(AuditRow.position)
    .limit(bindparam("limit"))
)


def rows_after(session: Session, after: int, limit: int) -> list[Any]:
    """Up to `limit` audit rows after position `after`, in order, as rows `as_item` reads."""
    return list(session.connection().execute(_ROWS_AFTER, {"after": after, "limit": limit}))


class AuditFile:
    """The JSON-lines audit file; appends the table's rows it does not hold yet."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def catch_up(self, session: Session, *, batch_size: int = 1000) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with open(self.path, "a+b") as handle:
            # One writer at a time on this host; another waits, then resumes after our lines.
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                last = self._repair_and_last_position(handle)
                while True:
                    rows = rows_after(session, last, batch_size)
                    if not rows:
                        break
                    handle.write(b"".join(self._line(row) for row in rows))
                    handle.flush()
                    os.fsync(handle.fileno())
                    written += len(rows)
                    last = rows[-1].position
                    if len(rows) < batch_size:
                        break  # that was the end of the table
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return written

    @staticmethod
    def _line(row: Any) -> bytes:
        return json.dumps(as_item(row), ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    @staticmethod
    def _repair_and_last_position(handle: Any) -> int:
        """The last complete line's position; a torn last line (no newline) is cut off."""
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        if size == 0:
            return 0
        tail = b""
        offset = size
        while offset > 0 and tail.count(b"\n") < 2:
            step = min(65536, offset)
            offset -= step
            handle.seek(offset)
            tail = handle.read(step) + tail
        if not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n")
            keep = offset + cut + 1 if cut >= 0 else 0
            handle.truncate(keep)
            tail = tail[: cut + 1] if cut >= 0 else b""
        lines = tail.rstrip(b"\n").split(b"\n")
        if not lines or not lines[-1]:
            return 0
        return int(json.loads(lines[-1])["position"])

    def lines(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                yield json.loads(line)
