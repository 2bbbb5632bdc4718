"""What every asynchronous projection shares: the checkpoint table and the runner.

A checkpoint is the position of the last event an asynchronous projection has applied. It is
written in the same transaction as the projection's rows, so the two can never disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import BigInteger, String, bindparam, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from configsync.db import Base, UTCDateTime, insert_missing, upsert, utcnow
from configsync.events import StoredEvent, hash_at, read_after, read_heads_after


class CheckpointRow(Base):
    __tablename__ = "projection_checkpoints"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The chain hash of the event at `position` when it was applied: if the log no longer has
    # that event there, it was rewritten or truncated, and the runner stops (LogRewritten).
    event_hash: Mapped[str | None] = mapped_column(String(64))


class LogRewritten(Exception):
    """The event at a projection's checkpoint is gone or changed: the log was tampered with.

    Going on would skip an event or apply a position twice; the runner stops instead, until an
    operator has looked (and rebuilt the projection from a log they trust).
    """


def checkpoint(session: Session, name: str) -> int:
    found = session.scalar(select(CheckpointRow.position).where(CheckpointRow.name == name))
    return int(found or 0)


# The runner's statements are built once: a catch-up runs them for every task the API sends
# (tens a second under write load), and building them per call cost more than running them.
_CHECKPOINT = select(CheckpointRow.position, CheckpointRow.event_hash).where(
    CheckpointRow.name == bindparam("name")
)
_CHECKPOINT_FOR_UPDATE = _CHECKPOINT.with_for_update()
_MOVE = (
    update(CheckpointRow)
    .where(CheckpointRow.name == bindparam("projection"))
    .where(CheckpointRow.position < bindparam("to_position"))
    .values(
        position=bindparam("to_position"),
        event_hash=bindparam("to_hash"),
        updated_at=bindparam("at"),
    )
)


def move_checkpoint(session: Session, name: str, event: StoredEvent) -> None:
    """Record that `name` has applied everything up to `event`; never moves backwards. The
    row is there and locked: the runner's claim made it (`_claim`)."""
    session.connection().execute(
        _MOVE,
        {
            "projection": name,
            "to_position": event.position,
            "to_hash": event.hash,
            "at": utcnow(),
        },
    )


class Projection(Protocol):
    """A read model applied asynchronously, in global order, from its checkpoint on.

    It is given only the events whose type it `handles`; the others (event types added after
    it was written) are passed over, and the checkpoint moves past them all the same.
    """

    name: str

    @property
    def handles(self) -> frozenset[str] | None:
        """The event types it applies; None: every type."""

    @property
    def needs_payload(self) -> bool:
        """False: it reads positions and hashes only, and is given events without their data
        and metadata (never parsed: most of a replay's time)."""

    def apply(self, session: Session, events: Sequence[StoredEvent]) -> None:
        """Write the rows for `events` (in position order), in the caller's transaction."""

    def clear(self, session: Session) -> None:
        """Delete every row (for a rebuild), in the caller's transaction."""


def _claim(session: Session, name: str) -> int:
    """Lock this projection's checkpoint row for the transaction and return its position,
    after checking that the log still holds the event recorded there (else LogRewritten).

    Two workers catching up at once would otherwise both read "after 41" and both apply 42.
    The row lock makes the second wait and then read the checkpoint the first moved. The row
    is made the first time only (two first workers both insert-if-missing, then both lock it).
    """
    connection = session.connection()
    # (SQLite: BEGIN IMMEDIATE already holds the database.)
    postgres = connection.dialect.name == "postgresql"
    query = _CHECKPOINT_FOR_UPDATE if postgres else _CHECKPOINT
    found = connection.execute(query, {"name": name}).first()
    if found is None:
        insert_missing(
            session,
            CheckpointRow,
            [{"name": name, "position": 0, "updated_at": utcnow()}],
            key=["name"],
        )
        found = connection.execute(query, {"name": name}).first()
    position = int(found.position) if found else 0
    recorded = found.event_hash if found else None
    if recorded is not None:
        actual = hash_at(session, position)
        if actual != recorded:
            what = "is gone (the log was truncated)" if actual is None else "has changed"
            raise LogRewritten(
                f"projection {name}: the event at its checkpoint, position {position}, {what}; "
                "it stops rather than skip or reuse a position"
            )
    return position


def rewritten(session: Session) -> str | None:
    """Why a projection would stop because the log was rewritten under it, or None."""
    rows = session.execute(
        select(CheckpointRow.name, CheckpointRow.position, CheckpointRow.event_hash).where(
            CheckpointRow.event_hash.is_not(None)
        )
    )
    for name, position, recorded in rows:
        if hash_at(session, position) != recorded:
            return f"projection {name}: the event at its checkpoint, position {position}, changed"
    return None


def catch_up(
    factory: sessionmaker[Session],
    projection: Projection,
    *,
    batch_size: int = 1000,
    on_batch: Callable[[Sequence[StoredEvent]], None] | None = None,
) -> int:
    """Apply every event after the checkpoint, a batch per transaction; returns how many.

    Each batch's rows and the checkpoint move commit together, so a crash anywhere leaves the
    projection exactly at some batch boundary, and the next catch-up goes on from there: no
    event is skipped and none is applied twice, whatever happened to the task messages.
    """
    applied = 0
    while True:
        with factory() as session:
            position = _claim(session, projection.name)
            events = _read(session, projection, position, batch_size)
            if not events:
                session.rollback()
                return applied
            _apply(session, projection, events)
            if on_batch is not None:
                on_batch(events)
            move_checkpoint(session, projection.name, events[-1])
            session.commit()
        applied += len(events)
        if len(events) < batch_size:
            return applied


def rebuild(
    factory: sessionmaker[Session], projection: Projection, *, batch_size: int = 5000
) -> int:
    """Replay every event into the projection from scratch, in one transaction.

    Readers keep seeing the old rows until the commit, then the rebuilt ones: never a
    half-built projection.
    """
    with factory() as session:
        _claim(session, projection.name)
        projection.clear(session)
        replayed = 0
        last: StoredEvent | None = None
        for batch in _batches(session, projection, batch_size):
            _apply(session, projection, batch)
            replayed += len(batch)
            last = batch[-1]
        upsert(
            session,
            CheckpointRow,
            {
                "name": projection.name,
                "position": last.position if last else 0,
                "event_hash": last.hash if last else None,
                "updated_at": utcnow(),
            },
            key=["name"],
            update=["position", "event_hash", "updated_at"],
        )
        session.commit()
    return replayed


def _read(session: Session, projection: Projection, after: int, limit: int) -> list[StoredEvent]:
    if projection.needs_payload:
        return read_after(session, after, limit)
    return read_heads_after(session, after, limit)


def _apply(session: Session, projection: Projection, events: Sequence[StoredEvent]) -> None:
    handles = projection.handles
    handled = list(events) if handles is None else [e for e in events if e.type in handles]
    if handled:
        projection.apply(session, handled)


def _batches(session: Session, projection: Projection, size: int) -> Iterator[list[StoredEvent]]:
    after = 0
    while True:
        batch = _read(session, projection, after, size)
        if batch:
            yield batch
        if len(batch) < size:
            return
        after = batch[-1].position


@dataclass(frozen=True, slots=True)
class Status:
    name: str
    position: int
    last_position: int

    @property
    def lag(self) -> int:
        return self.last_position - self.position
