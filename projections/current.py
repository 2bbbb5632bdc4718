"""The `current` projection: each config's latest document, applied inline with every append.

Inline means in the append's own transaction, so a write is visible to the very next read
(read-your-writes). The same `apply_changes` that applies one event here replays them all in
`rebuild`, so the rebuilt table cannot differ from the one maintained write by write.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Integer,
    String,
    Text,
    bindparam,
    delete,
    func,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from configsync.db import Base, UTCDateTime, upsert
from configsync.domain.documents import (
    Document,
    applied,
    apply_changes,
    documents_equal,
    fold,
)
from configsync.domain.events import CONFIG_CHANGED, split_stream, stream_name
from configsync.events import Alongside, NewEvent, StoredEvent, iter_rows, read_stream
from configsync.events.canonical import canonical_json, loads
from configsync.events.models import EventRow

NAME = "current"
HANDLES = frozenset({CONFIG_CHANGED})


class ConfigCurrentRow(Base):
    __tablename__ = "config_current"

    service: Mapped[str] = mapped_column(String(63), primary_key=True)
    environment: Mapped[str] = mapped_column(String(63), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    data: Mapped[str] = mapped_column(Text)  # canonical JSON of the document
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str] = mapped_column(Text)  # canonical JSON of the actor
    position: Mapped[int] = mapped_column(BigInteger, index=True)


@dataclass(frozen=True, slots=True)
class CurrentConfig:
    service: str
    environment: str
    version: int
    document: Document
    deleted: bool
    updated_at: datetime
    updated_by: dict[str, Any]
    position: int

    @classmethod
    def from_row(cls, row: Any) -> CurrentConfig:
        return cls(
            service=row.service,
            environment=row.environment,
            version=row.version,
            document=loads(row.data),
            deleted=row.deleted,
            updated_at=row.updated_at,
            updated_by=loads(row.updated_by),
            position=row.position,
        )


def read(session: Session, service: str, environment: str) -> CurrentConfig | None:
    # Plain columns, not an ORM instance: every write and every uncached read comes here.
    params = {"service": service, "environment": environment}
    row = session.connection().execute(_READ, params).first()
    return CurrentConfig.from_row(row) if row is not None else None


COLUMNS = (
    ConfigCurrentRow.service,
    ConfigCurrentRow.environment,
    ConfigCurrentRow.version,
    ConfigCurrentRow.data,
    ConfigCurrentRow.deleted,
    ConfigCurrentRow.updated_at,
    ConfigCurrentRow.updated_by,
    ConfigCurrentRow.position,
)

# Built once and run on the connection: no per-call statement building or ORM compiling.
_READ = select(*COLUMNS).where(
    ConfigCurrentRow.service == bindparam("service"),
    ConfigCurrentRow.environment == bindparam("environment"),
)


def read_all(session: Session) -> Iterator[CurrentConfig]:
    rows = session.scalars(
        select(ConfigCurrentRow).order_by(ConfigCurrentRow.service, ConfigCurrentRow.environment)
    )
    for row in rows:
        yield CurrentConfig.from_row(row)


def position(session: Session) -> int:
    """The last event this projection reflects (it has no checkpoint row: it is never behind)."""
    return int(session.scalar(select(func.max(ConfigCurrentRow.position))) or 0)


def next_document(document_before: Document, changes: list[Any]) -> Document:
    """The document an event's changes make of the one before: what `rebuild` computes too
    (`applied` is `apply_changes` on a copy; the property tests hold them to one result)."""
    return applied(document_before, changes)


def apply_all(session: Session, appended: Sequence[tuple[StoredEvent, str]]) -> None:
    """Write the rows of events just appended, each with its `next_document` as canonical JSON.

    The documents are serialized by the caller, before the append: this runs under the append
    lock, where every millisecond is one that no other writer can use.
    """
    rows = [_row_values(e, document_json) for e, document_json in appended if e.type in HANDLES]
    if rows:
        _write(session, rows)


def _row_values(event: StoredEvent, document_json: str) -> dict[str, Any]:
    return {
        **_known_before(event.stream, event.version, event.data, event.metadata, document_json),
        "updated_at": event.recorded_at,
        "position": event.position,
    }


def alongside(appending: Sequence[tuple[NewEvent, str]]) -> Alongside | None:
    """apply_all's rows for events about to be appended (in the batch's order, each with its
    document as canonical JSON), written in the append's own round trip: their positions and
    times come from the append's rows (PostgreSQL)."""
    rows = [
        (index, _known_before(e.stream, e.expected_version + 1, e.data, e.metadata, document))
        for index, (e, document) in enumerate(appending, 1)
        if e.type in HANDLES
    ]
    if not rows:
        return None
    return Alongside(
        _UPSERT_ALONGSIDE,
        ([index for index, _ in rows], *([row[name] for _, row in rows] for name in _KNOWN)),
    )


def _known_before(
    stream: str,
    version: int,
    data: Mapping[str, Any],
    metadata: Mapping[str, Any],
    document_json: str,
) -> dict[str, Any]:
    """A row's values that do not depend on where the append puts the event."""
    service, environment = split_stream(stream)
    return {
        "service": service,
        "environment": environment,
        "version": version,
        "data": document_json,
        "deleted": bool(data.get("deleted")),
        "updated_by": canonical_json(metadata.get("actor") or {}),
    }


_UPDATED = ("version", "data", "deleted", "updated_at", "updated_by", "position")
_COLUMNS = ("service", "environment", *_UPDATED)
_KNOWN = ("service", "environment", "version", "data", "deleted", "updated_by")
# On PostgreSQL the rows go as one array per column, in one statement sent at driver level: a
# group commit's batch (every write comes here, in the append's transaction) and a rebuild's
# thousand rows alike skip SQLAlchemy's parameter handling row by row, which was a twentieth of
# the API's CPU per write.
_UPSERT_POSTGRES = (
    f"INSERT INTO config_current ({', '.join(_COLUMNS)})"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::integer[], %s::text[], %s::boolean[],"
    " %s::timestamptz[], %s::text[], %s::bigint[])"
    " ON CONFLICT (service, environment) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in _UPDATED)
)

# The same upsert, beside the append (configsync.events.Alongside): `appended` gives each
# event's position and time, and an event that was not appended (a stale expected version)
# writes no row.
_UPSERT_ALONGSIDE = (
    f"INSERT INTO config_current ({', '.join(_COLUMNS)})"
    " SELECT r.service, r.environment, r.version, r.data, r.deleted, a.o_recorded_at,"
    " r.updated_by, a.o_position"
    " FROM unnest(%s::integer[], %s::text[], %s::text[], %s::integer[], %s::text[],"
    " %s::boolean[], %s::text[]) AS r(n, service, environment, version, data, deleted,"
    " updated_by)"
    " JOIN appended a ON a.o_index = r.n WHERE a.o_position IS NOT NULL"
    " ON CONFLICT (service, environment) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in _UPDATED)
    + " RETURNING 1"
)


def _write(session: Session, rows: list[dict[str, Any]]) -> None:
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        columns = [[row[name] for row in rows] for name in _COLUMNS]
        connection.exec_driver_sql(_UPSERT_POSTGRES, tuple(columns))
        return
    upsert(session, ConfigCurrentRow, rows, key=["service", "environment"], update=list(_UPDATED))


def rebuild(session: Session, *, batch_size: int = 5000) -> int:
    """Replay every event into a fresh table, in the caller's transaction; returns the count.

    The old rows are deleted and the new ones written in one transaction, so readers see either
    the old projection or the rebuilt one, never a half-built one.
    """
    last: dict[str, Any] = {}  # stream -> its last event's row
    documents: dict[str, Document] = {}
    replayed = 0
    for row in iter_rows(session, batch_size=batch_size):
        if row.type not in HANDLES:
            continue
        documents[row.stream] = apply_changes(
            documents.get(row.stream, {}), loads(row.data)["changes"]
        )
        last[row.stream] = row
        replayed += 1
    session.execute(delete(ConfigCurrentRow))
    rows = [
        _row_values(StoredEvent.from_row(last[stream]), canonical_json(documents[stream]))
        for stream in sorted(last)
    ]
    for start in range(0, len(rows), 1000):
        _write(session, rows[start : start + 1000])
    return replayed


@dataclass(frozen=True, slots=True)
class Mismatch:
    stream: str
    reason: str


def verify(session: Session) -> list[Mismatch]:
    """Compare every stream's `current` row with a fresh fold of its events."""
    mismatches: list[Mismatch] = []
    rows = {stream_name(c.service, c.environment): c for c in read_all(session)}
    streams = session.scalars(
        select(func.distinct(EventRow.stream)).where(EventRow.type.in_(HANDLES))
    ).all()
    for stream in sorted(set(streams) | set(rows)):
        folded = fold(e for e in read_stream(session, stream) if e.type in HANDLES)
        row = rows.get(stream)
        if row is None:
            mismatches.append(Mismatch(stream, "missing from the projection"))
        elif folded.version == 0:
            mismatches.append(Mismatch(stream, "in the projection but has no events"))
        elif row.version != folded.version:
            mismatches.append(
                Mismatch(stream, f"version {row.version}, events say {folded.version}")
            )
        elif row.deleted != folded.deleted:
            mismatches.append(Mismatch(stream, "deleted flag differs from the events"))
        elif not documents_equal(row.document, folded.document):
            mismatches.append(Mismatch(stream, "document differs from the fold of its events"))
    return mismatches
