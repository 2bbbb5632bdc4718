"""Snapshots: a config's document every SNAPSHOT_EVERY versions, so reads of the past stay fast.

Reading version N folds the events after the nearest snapshot at or below N, never more than
SNAPSHOT_EVERY - 1 of them, however long the history. Snapshots are written inline with the
append that reaches the version, and are derived data: `rebuild` makes them again from events.
Nothing is ever compacted away: the events stay, and every version can be read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Integer, String, Text, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from configsync.db import Base, upsert
from configsync.domain.documents import Document, apply_changes
from configsync.domain.events import CONFIG_CHANGED
from configsync.events import Alongside, NewEvent, StoredEvent, iter_rows
from configsync.events.canonical import canonical_json, loads

NAME = "snapshots"
HANDLES = frozenset({CONFIG_CHANGED})
SNAPSHOT_EVERY = 100


class SnapshotRow(Base):
    __tablename__ = "config_snapshots"

    stream: Mapped[str] = mapped_column(String(160), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[str] = mapped_column(Text)  # canonical JSON of the document at that version


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    document: Document


def due(version: int) -> bool:
    return version % SNAPSHOT_EVERY == 0


def apply_all(session: Session, appended: Sequence[tuple[StoredEvent, str]]) -> None:
    """Called with the events just appended, each with its document as canonical JSON."""
    rows: list[dict[str, object]] = [
        {"stream": event.stream, "version": event.version, "data": document_json}
        for event, document_json in appended
        if event.type in HANDLES and due(event.version)
    ]
    if rows:
        _write(session, rows)


def alongside(appending: Sequence[tuple[NewEvent, str]]) -> Alongside | None:
    """apply_all's rows for events about to be appended (in the batch's order, each with its
    document as canonical JSON), written in the append's own round trip (PostgreSQL)."""
    rows = [
        (index, event.stream, event.expected_version + 1, document)
        for index, (event, document) in enumerate(appending, 1)
        if event.type in HANDLES and due(event.expected_version + 1)
    ]
    if not rows:
        return None
    return Alongside(_UPSERT_ALONGSIDE, tuple(list(column) for column in zip(*rows, strict=True)))


# _write's upsert beside the append (configsync.events.Alongside): only for events appended.
_UPSERT_ALONGSIDE = (
    "INSERT INTO config_snapshots (stream, version, data)"
    " SELECT r.stream, r.version, r.data"
    " FROM unnest(%s::integer[], %s::text[], %s::integer[], %s::text[])"
    " AS r(n, stream, version, data)"
    " JOIN appended a ON a.o_index = r.n WHERE a.o_position IS NOT NULL"
    " ON CONFLICT (stream, version) DO UPDATE SET data = excluded.data RETURNING 1"
)


def _write(session: Session, rows: list[dict[str, object]]) -> None:
    upsert(session, SnapshotRow, rows, key=["stream", "version"], update=["data"])


def latest(session: Session, stream: str, at_or_before: int) -> Snapshot | None:
    row = session.execute(
        select(SnapshotRow.version, SnapshotRow.data)
        .where(SnapshotRow.stream == stream, SnapshotRow.version <= at_or_before)
        .order_by(SnapshotRow.version.desc())
        .limit(1)
    ).first()
    return Snapshot(version=row.version, document=loads(row.data)) if row else None


def rebuild(session: Session) -> int:
    """Replay every event and write every snapshot again; returns how many were written."""
    documents: dict[str, Document] = {}
    rows: list[dict[str, object]] = []
    for event in iter_rows(session):
        if event.type not in HANDLES:
            continue
        documents[event.stream] = apply_changes(
            documents.get(event.stream, {}), loads(event.data)["changes"]
        )
        if due(event.version):
            rows.append(
                {
                    "stream": event.stream,
                    "version": event.version,
                    "data": canonical_json(documents[event.stream]),
                }
            )
    session.execute(delete(SnapshotRow))
    for start in range(0, len(rows), 500):
        _write(session, rows[start : start + 500])
    return len(rows)
