"""The event store: append with an expected version, read streams, read the global feed, verify.

Every function takes the caller's Session and works inside its transaction; none commits. The
caller commits (or rolls back) once the inline projections have been applied, so an event and
the read models it updates become visible together.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from configsync.db import utcnow
from configsync.errors import InvalidDocument, InvalidInput, VersionConflict
from configsync.events.canonical import canonical_json, loads
from configsync.events.models import EventRow

GENESIS_HASH = "0" * 64

# Keys for PostgreSQL advisory locks. The one-key (bigint) and two-key (int, int) forms live in
# separate key spaces, so the global append lock cannot collide with a stream lock.
APPEND_LOCK_KEY = 0x636F_6E66_6967_7301  # "configs" + 1
STREAM_LOCK_NAMESPACE = 0x6373_7472  # "cstr"
# Stream and type names need no escaping inside JSON, which keeps the PostgreSQL append's
# hand-built canonical JSON identical to canonical_json's.
_STREAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,159}")
_TYPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,63}")


# Events are read as plain rows, not ORM objects: replays read hundreds of thousands of them and
# an identity map would only hold them in memory.
_EVENT_COLUMNS = (
    EventRow.position,
    EventRow.event_id,
    EventRow.stream,
    EventRow.version,
    EventRow.type,
    EventRow.data,
    # Labelled: a row read on the connection (not through the ORM) is keyed by this name too.
    EventRow.metadata_.label("metadata_"),
    EventRow.recorded_at,
    EventRow.prev_hash,
    EventRow.hash,
)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: int
    event_id: str
    stream: str
    version: int
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: datetime
    prev_hash: str
    hash: str

    @classmethod
    def from_row(cls, row: Any) -> StoredEvent:
        return cls(
            position=row.position,
            event_id=row.event_id,
            stream=row.stream,
            version=row.version,
            type=row.type,
            data=loads(row.data),
            metadata=loads(row.metadata_),
            recorded_at=row.recorded_at,
            prev_hash=row.prev_hash,
            hash=row.hash,
        )


def format_instant(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(
    prev_hash: str,
    *,
    position: int,
    event_id: str,
    stream: str,
    version: int,
    type: str,
    data: Mapping[str, Any],
    metadata: Mapping[str, Any],
    recorded_at: datetime,
) -> str:
    body = canonical_json(
        {
            "position": position,
            "event_id": event_id,
            "stream": stream,
            "version": version,
            "type": type,
            "data": data,
            "metadata": metadata,
            "recorded_at": format_instant(recorded_at),
        }
    )
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


_STREAM_LOCK = text("SELECT pg_advisory_xact_lock(:ns, hashtext(:stream))")


def lock_stream(session: Session, stream: str) -> None:
    """Serialize writers of one stream until the transaction ends.

    A writer that reads the current document, computes its changes and then appends holds this
    so that nobody appends to the same stream in between: the changes it stores are always
    computed against the document they apply to. Writers of other streams are not held up. On
    SQLite every write transaction already holds the database's single write lock.
    """
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(_STREAM_LOCK, {"ns": STREAM_LOCK_NAMESPACE, "stream": stream})


def stream_version(session: Session, stream: str) -> int:
    """The stream's last version, 0 when it has no events."""
    found = session.scalar(select(func.max(EventRow.version)).where(EventRow.stream == stream))
    return int(found or 0)


# Why appends are serialized: positions are handed out as max(position) + 1 and the hash
# chain links each event to the one before it, so exactly one append may be between "read the
# last event" and "commit" at a time. More importantly, subscribers read "every event after my
# checkpoint". With a sequence, transaction B could take position 8 and commit while A, holding
# position 7, is still open; a subscriber would then read 8, move its checkpoint to 8 and never
# see 7. Holding one transaction-scoped lock from before the read of the last position until
# commit makes positions become visible strictly in order and leaves no gaps (a rolled-back
# append consumes nothing). PostgreSQL releases the lock only after the commit is visible.
# On PostgreSQL the lock is a transaction-scoped advisory lock taken in configsync_append_batch;
# on SQLite, BEGIN IMMEDIATE (configsync.db) already gives every writer the whole database.
# Since the lock is held through the commit, appends per second are bounded by commits per
# second; configsync.events.group puts many appends in one transaction to lift that bound.
class NewEvent:
    """An event to append to `stream`, which must be at `expected_version` (0: no events yet).

    Checked, given its id and serialized when made: that work needs no lock, and it is done in
    the writer's own thread, not in a group commit's batch (configsync.events.group). Raises
    InvalidInput for a bad name or version and InvalidDocument for a payload that is not JSON.
    """

    __slots__ = (
        "data",
        "data_json",
        "event_id",
        "expected_version",
        "metadata",
        "metadata_json",
        "stream",
        "type",
    )

    def __init__(
        self,
        stream: str,
        expected_version: int,
        data: Mapping[str, Any],
        metadata: Mapping[str, Any],
        *,
        type: str,
    ) -> None:
        if not _STREAM_NAME.fullmatch(stream):
            raise InvalidInput(f"stream names must match {_STREAM_NAME.pattern}")
        if not _TYPE_NAME.fullmatch(type):
            raise InvalidInput(f"type names must match {_TYPE_NAME.pattern}")
        if expected_version < 0:
            raise InvalidInput("expected_version must be 0 or more")
        self.stream = stream
        self.expected_version = expected_version
        self.type = type
        self.event_id = str(uuid.uuid4())
        self.data = dict(data)
        self.metadata = dict(metadata)
        self.data_json = canonical_json(self.data)
        self.metadata_json = canonical_json(self.metadata)

    def __repr__(self) -> str:
        return f"NewEvent({self.stream!r}, expected_version={self.expected_version})"


def append(
    session: Session,
    stream: str,
    expected_version: int,
    data: Mapping[str, Any],
    metadata: Mapping[str, Any],
    *,
    type: str,
) -> StoredEvent:
    """Append one event to `stream`, which must be at `expected_version` (0: no events yet).

    Raises VersionConflict (and appends nothing) when it is not. Payloads must be plain JSON.
    """
    (outcome,) = append_batch(
        session, [NewEvent(stream, expected_version, data, metadata, type=type)]
    )
    if isinstance(outcome, VersionConflict):
        raise outcome
    return outcome


@dataclass(frozen=True, slots=True)
class Alongside:
    """A statement that PostgreSQL runs in the append's own round trip, once the events are in.

    `sql` is the body of a common table expression that may read `appended`, the append's
    rows: `o_index` (the event's place in the batch, from 1), `o_position` (NULL for an event
    whose expected version was stale, which appended nothing), `o_recorded_at`, `o_prev_hash`,
    `o_hash`. It must return rows (a SELECT, or an INSERT ... RETURNING): the statement counts
    them, which runs it exactly once. `params` are its `%s` parameters, in order.

    Why: the append lock is held from the append to the commit, so every round trip after the
    append (the inline projections' writes, the change feed's notices) is time in which no other
    writer can append. Run alongside, they cost none.
    """

    sql: str
    params: tuple[Any, ...]


def append_batch(
    session: Session, events: Sequence[NewEvent], alongside: Sequence[Alongside] = ()
) -> list[StoredEvent | VersionConflict]:
    """Append several events in the caller's transaction, in order, under one lock.

    Each is checked against its own expected version: one that is stale comes back as its
    VersionConflict (and appends nothing) while the others are appended. An event may expect a
    version that an earlier one of the same batch creates. `alongside`: statements to run in the
    same round trip (PostgreSQL only).
    """
    if not events:
        return []
    if session.get_bind().dialect.name == "postgresql":
        rows = _append_postgres(session, events, alongside)
    elif alongside:
        raise ValueError("statements alongside an append need PostgreSQL")
    else:
        rows = [_append_python(session, event) for event in events]
    outcomes: list[StoredEvent | VersionConflict] = []
    for event, row in zip(events, rows, strict=True):
        if isinstance(row, int):
            outcomes.append(VersionConflict(event.stream, event.expected_version, row))
            continue
        position, recorded_at, prev_hash, digest = row
        outcomes.append(
            StoredEvent(
                position=position,
                event_id=event.event_id,
                stream=event.stream,
                version=event.expected_version + 1,
                type=event.type,
                data=event.data,
                metadata=event.metadata,
                recorded_at=recorded_at,
                prev_hash=prev_hash,
                hash=digest,
            )
        )
    return outcomes


# (position, recorded_at, prev_hash, hash) of an appended event, or the actual version of a
# stream whose expected version was stale.
_AppendResult = tuple[int, datetime, str, str] | int
# Sent at driver level: this runs under the append lock on every write, and skipping
# SQLAlchemy's statement handling here is a measurable share of the lock's hold time.
_APPEND_SQL = "SELECT * FROM configsync_append_batch(%s, %s, %s, %s, %s, %s, %s)"


def _append_postgres(
    session: Session, events: Sequence[NewEvent], alongside: Sequence[Alongside]
) -> list[_AppendResult]:
    # One round trip: configsync_append_batch (migration 0004) takes the append lock and, for
    # each event, checks the version, links and hashes exactly as _append_python does, and
    # inserts; then the statements alongside it. The lock is held from there to commit, so the
    # fewer round trips under it, the more appends per second.
    params: tuple[Any, ...] = (
        APPEND_LOCK_KEY,
        [e.stream for e in events],
        [e.expected_version for e in events],
        [e.event_id for e in events],
        [e.type for e in events],
        [e.data_json for e in events],
        [e.metadata_json for e in events],
    )
    sql = _APPEND_SQL
    if alongside:
        # MATERIALIZED: the function runs once, whatever reads its rows.
        named = [f"alongside_{i} AS ({a.sql})" for i, a in enumerate(alongside)]
        counted = [f"(SELECT count(*) FROM alongside_{i})" for i in range(len(alongside))]
        sql = (
            f"WITH appended AS MATERIALIZED ({_APPEND_SQL}), {', '.join(named)}"
            f" SELECT appended.*, {', '.join(counted)} FROM appended"
        )
        params += tuple(p for a in alongside for p in a.params)
    rows = session.connection().exec_driver_sql(sql, params).all()
    results: list[_AppendResult] = []
    for row in sorted(rows, key=lambda r: r.o_index):
        if row.o_position is None:
            results.append(row.o_actual_version)
        else:
            recorded_at = row.o_recorded_at.astimezone(UTC)
            results.append((row.o_position, recorded_at, row.o_prev_hash, row.o_hash))
    return results


def _append_python(session: Session, event: NewEvent) -> _AppendResult:
    # The caller's transaction began with BEGIN IMMEDIATE: this writer holds the database.
    stream, expected_version = event.stream, event.expected_version
    actual = stream_version(session, stream)
    if actual != expected_version:
        return actual
    last = session.execute(
        select(EventRow.position, EventRow.hash, EventRow.recorded_at)
        .order_by(EventRow.position.desc())
        .limit(1)
    ).first()
    position = last.position + 1 if last else 1
    prev_hash = last.hash if last else GENESIS_HASH
    # recorded_at never goes backwards along the log, even if the clock does: point-in-time
    # reads ("as of T") rely on time and position agreeing.
    recorded_at = max(utcnow(), last.recorded_at) if last else utcnow()
    version = expected_version + 1
    digest = event_hash(
        prev_hash,
        position=position,
        event_id=event.event_id,
        stream=stream,
        version=version,
        type=event.type,
        data=event.data,
        metadata=event.metadata,
        recorded_at=recorded_at,
    )
    try:
        # A savepoint, so that the last line of defence below leaves the transaction usable
        # for the rest of a batch.
        with session.begin_nested():
            session.execute(
                insert(EventRow).values(
                    position=position,
                    event_id=event.event_id,
                    stream=stream,
                    version=version,
                    type=event.type,
                    data=event.data_json,
                    metadata_=event.metadata_json,
                    recorded_at=recorded_at,
                    prev_hash=prev_hash,
                    hash=digest,
                )
            )
    except IntegrityError:  # the unique (stream, version): last line of defence only
        return stream_version(session, stream)
    return position, recorded_at, prev_hash, digest


def read_stream(
    session: Session,
    stream: str,
    *,
    up_to_version: int | None = None,
    until: datetime | None = None,
    from_version: int = 1,
    newest_first: bool = False,
    limit: int | None = None,
) -> list[StoredEvent]:
    """A stream's events by version: all, a range of versions, or those recorded by `until`."""
    query = select(*_EVENT_COLUMNS).where(
        EventRow.stream == stream, EventRow.version >= from_version
    )
    if up_to_version is not None:
        query = query.where(EventRow.version <= up_to_version)
    if until is not None:
        query = query.where(EventRow.recorded_at <= until)
    query = query.order_by(EventRow.version.desc() if newest_first else EventRow.version)
    if limit is not None:
        query = query.limit(limit)
    return [StoredEvent.from_row(row) for row in session.execute(query)]


def version_at(session: Session, stream: str, instant: datetime) -> int:
    """The stream's version at `instant` (0 if it had no events yet)."""
    found = session.scalar(
        select(func.max(EventRow.version)).where(
            EventRow.stream == stream, EventRow.recorded_at <= instant
        )
    )
    return int(found or 0)


def read_after(session: Session, after: int, limit: int = 1000) -> list[StoredEvent]:
    """Events with position > `after`, in global order, at most `limit` of them."""
    rows = session.connection().execute(_AFTER, {"after": after, "limit": limit})
    return [StoredEvent.from_row(row) for row in rows]


def read_heads_after(session: Session, after: int, limit: int = 1000) -> list[StoredEvent]:
    """Like `read_after` without the payloads (`data` and `metadata` left empty, never parsed):
    for consumers of positions and hashes only, such as the Merkle tree."""
    rows = session.connection().execute(_HEADS_AFTER, {"after": after, "limit": limit})
    return [
        StoredEvent(
            r.position,
            r.event_id,
            r.stream,
            r.version,
            r.type,
            {},
            {},
            r.recorded_at,
            r.prev_hash,
            r.hash,
        )
        for r in rows
    ]


def iter_rows(session: Session, *, after: int = 0, batch_size: int = 5000) -> Iterator[Any]:
    """Every event after `after` as a database row, in global order, read in batches (keyset
    paging). `data` and `metadata_` are still JSON text.

    For replays: parsing JSON is most of their time, and a rebuild needs only each event's data
    (and the metadata of a few), so it parses what it uses (`StoredEvent.from_row` for the rest).
    """
    while True:
        batch = session.connection().execute(_AFTER, {"after": after, "limit": batch_size}).all()
        yield from batch
        if len(batch) < batch_size:
            return
        after = batch[-1].position


def hash_at(session: Session, position: int) -> str | None:
    """The chain hash of the event at `position`, None if there is none."""
    found = session.connection().execute(_HASH_AT, {"position": position}).scalar()
    return str(found) if found is not None else None


# Built once: the projection runner reads with these on every catch-up (tens a second under
# write load), and building a statement cost more than running it.
_AFTER = (
    select(*_EVENT_COLUMNS)
    .where(EventRow.position > bindparam("after"))
    .order_by(EventRow.position)
    .limit(bindparam("limit"))
)
_HEADS_AFTER = (
    select(
        EventRow.position,
        EventRow.event_id,
        EventRow.stream,
        EventRow.version,
        EventRow.type,
        EventRow.recorded_at,
        EventRow.prev_hash,
        EventRow.hash,
    )
    .where(EventRow.position > bindparam("after"))
    .order_by(EventRow.position)
    .limit(bindparam("limit"))
)
_HASH_AT = select(EventRow.hash).where(EventRow.position == bindparam("position"))


def last_position(session: Session) -> int:
    return int(session.scalar(select(func.max(EventRow.position))) or 0)


@dataclass(frozen=True, slots=True)
class ChainReport:
    ok: bool
    checked: int
    first_bad_position: int | None


def verify_chain(session: Session, *, batch_size: int = 5000) -> ChainReport:
    """Walk the whole log and recompute every hash from what the database gives back.

    The first event whose position is out of sequence, whose prev_hash is not its predecessor's
    hash, or whose hash does not match its content is reported.
    """
    expected_prev = GENESIS_HASH
    checked = 0
    for row in iter_rows(session, batch_size=batch_size):
        # Gapless: the n-th event is at position n.
        if not _row_is_intact(row, checked + 1, expected_prev):
            return ChainReport(ok=False, checked=checked, first_bad_position=row.position)
        checked += 1
        expected_prev = row.hash
    return ChainReport(ok=True, checked=checked, first_bad_position=None)


def _row_is_intact(row: Any, expected_position: int, expected_prev: str) -> bool:
    if row.position != expected_position or row.prev_hash != expected_prev:
        return False
    try:
        ev = StoredEvent.from_row(row)
        recomputed = event_hash(
            ev.prev_hash,
            position=ev.position,
            event_id=ev.event_id,
            stream=ev.stream,
            version=ev.version,
            type=ev.type,
            data=ev.data,
            metadata=ev.metadata,
            recorded_at=ev.recorded_at,
        )
    except (ValueError, TypeError, InvalidDocument):  # no longer JSON, or no longer plain JSON
        return False
    return row.hash == recomputed
