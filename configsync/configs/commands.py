"""The config domain's one write path: replace, merge-patch, delete, roll back, promote.

Commands take the caller's Session and never commit. A write is checked in the caller's
thread, then decided against its config's state under the config's stream lock, appended and
committed: in the caller's transaction, which the caller's unit of work commits before the work
registered with `after_commit` (the write path's listeners: task dispatch, this process's caches
and long polls) runs; or, on PostgreSQL, in a group commit's batch shared with other writers
(configsync.events.group), durable when the command returns. Which of the two, and who is told
after commit, is the `WritePath` in the WriteContext: passed in, never looked up.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from configsync.auth.models import ServiceRow
from configsync.configs.idempotency import IdempotencyKey, Used, remember
from configsync.configs.queries import WriteState, get, lock_and_read, missing, state_at
from configsync.db import (
    after_commit,
    insert_missing,
    is_lock_timeout,
    run_after_commit,
    utcnow,
)
from configsync.domain.actor import Actor
from configsync.domain.documents import (
    Document,
    Limits,
    compute_changes,
    copy_document,
    documents_equal,
    merge_patch,
    parse_key,
    validate_document,
)
from configsync.domain.events import (
    CONFIG_CHANGED,
    CREATED,
    DELETED,
    DESTROYED,
    PROMOTED,
    ROLLED_BACK,
    SECRETS_REVEALED,
    UPDATED,
    ConfigChanged,
    SecretsRevealed,
    reveals_stream,
    split_stream,
    stream_name,
)
from configsync.domain.names import validate_name
from configsync.domain.secrets import check_not_reserved, key_ids, mask
from configsync.errors import (
    AlreadyExists,
    ConfigSyncError,
    InvalidInput,
    NotFound,
    VersionConflict,
)
from configsync.events import (
    Alongside,
    NewEvent,
    StoredEvent,
    append,
    append_batch,
    lock_stream,
    read_stream,
    stream_version,
)
from configsync.events.canonical import canonical_json
from configsync.events.group import GroupCommit
from configsync.feed import CHANNEL, ConfigMoved, KeysDestroyed, encode, notify
from configsync.metrics import APPEND_SECONDS, BATCH_SIZE
from configsync.secrets.models import SecretKeyRow
from configsync.secrets.vault import Vault
from projections import current
from projections.registry import apply_inline, inline_alongside

# Called with every event a write appended, once its transaction has committed.
EventListener = Callable[[StoredEvent], None]


@dataclass(frozen=True, slots=True)
class WritePath:
    """How a process's writes reach the store, and who hears of them after commit.

    `group`: on PostgreSQL the API hands its writes to a group commit (configsync.events.group)
    that locks, decides and appends many in one transaction and one commit (decide_and_record);
    None does that for each write in its writer's own transaction. `listeners`: told of every
    committed event (the task dispatcher, this process's read cache and long polls).
    """

    group: GroupCommit[PendingWrite, WriteResult] | None = None
    listeners: tuple[EventListener, ...] = ()


DIRECT = WritePath()


@dataclass(frozen=True, slots=True)
class WriteContext:
    actor: Actor
    vault: Vault  # seals secret values before any event is built
    request_id: str | None = None
    client: str | None = None
    limits: Limits = field(default_factory=Limits)
    max_reason_length: int = 1000
    path: WritePath = DIRECT
    # Idempotency-Key of the request, and the outcome it was first used for (a retry).
    idempotency: IdempotencyKey | None = None
    used: Used | None = None
    # Whether the caller's authorization found the write's service (False: it was allowed as
    # the creator of a new one); None where no authorization recorded it (system writes).
    service_existed: bool | None = None

    def metadata(self) -> dict[str, Any]:
        return {"actor": self.actor.as_json(), "request_id": self.request_id, "client": self.client}


@dataclass(frozen=True, slots=True)
class WriteResult:
    service: str
    environment: str
    version: int
    document: Document  # plaintext: for callers who may read the config
    changed: bool
    created: bool
    deleted: bool
    updated_at: datetime
    updated_by: dict[str, Any]
    event: StoredEvent | None
    stored: Document | None = None  # as stored: secret values sealed

    def masked(self) -> Document:
        """The document with its secret values masked (for answers that are not reads)."""
        return mask(self.stored if self.stored is not None else self.document)


def replace(
    session: Session,
    service: str,
    environment: str,
    document: Any,
    ctx: WriteContext,
    *,
    reason: str | None = None,
    expected_version: int | None = None,
) -> WriteResult:
    """Replace the whole document."""
    return submit(session, replacing(service, environment, document, ctx, reason, expected_version))


def replacing(
    service: str,
    environment: str,
    document: Any,
    ctx: WriteContext,
    reason: str | None = None,
    expected_version: int | None = None,
) -> PendingWrite:
    """`replace`'s checks, and the write it submits."""
    validate_document(document, ctx.limits)
    check_not_reserved(document)
    return pending_write(service, environment, ctx, lambda _old: document, reason, expected_version)


def patch(
    session: Session,
    service: str,
    environment: str,
    merge: Any,
    ctx: WriteContext,
    *,
    reason: str | None = None,
    expected_version: int | None = None,
) -> WriteResult:
    """Apply an RFC 7396 merge patch to the current document (an absent config counts as {})."""
    return submit(session, patching(service, environment, merge, ctx, reason, expected_version))


def patching(
    service: str,
    environment: str,
    merge: Any,
    ctx: WriteContext,
    reason: str | None = None,
    expected_version: int | None = None,
) -> PendingWrite:
    """`patch`'s checks, and the write it submits."""
    if not isinstance(merge, dict):
        raise InvalidInput("a merge patch of a config must be a JSON object")

    def patched(old: Document) -> Document:
        new = merge_patch(old, merge)
        assert isinstance(new, dict)
        validate_document(new, ctx.limits)
        check_not_reserved(new)
        return new

    return pending_write(service, environment, ctx, patched, reason, expected_version)


def delete(
    session: Session,
    service: str,
    environment: str,
    ctx: WriteContext,
    *,
    reason: str | None = None,
    expected_version: int | None = None,
) -> WriteResult:
    """Append a deleting event; the history stays, and a later write re-creates the config."""
    return submit(
        session,
        pending_write(service, environment, ctx, None, reason, expected_version, deleting=True),
    )


def pending_write(
    service: str,
    environment: str,
    ctx: WriteContext,
    new_document: Callable[[Document], Document] | None,
    reason: str | None,
    expected_version: int | None,
    *,
    deleting: bool = False,
    action: str | None = None,
    rollback_of: int | None = None,
    promoted_from: dict[str, Any] | None = None,
) -> PendingWrite:
    """A write whose names and reason are checked, to be submitted."""
    validate_name("service", service)
    validate_name("environment", environment)
    check_reason(reason, ctx.max_reason_length)
    return PendingWrite(
        service,
        environment,
        ctx,
        None if deleting else new_document,
        reason,
        expected_version,
        action,
        rollback_of,
        promoted_from,
    )


def submit(session: Session, pending: PendingWrite) -> WriteResult:
    """Decide, append and commit `pending` along its context's write path (or, for a retried
    request, answer what it was answered the first time)."""
    ctx = pending.ctx
    if ctx.used is not None:
        return _replay(session, ctx.used, ctx.vault)
    if ctx.path.group is not None:
        return grouped(pending)
    (outcome,) = decide_and_record(session, [pending])
    if isinstance(outcome, Exception):
        raise outcome
    if outcome.event is not None:
        _on_commit(session, ctx, outcome.event)
    return outcome


def grouped(pending: PendingWrite) -> WriteResult:
    """Decide, append and commit `pending` in a batch shared with other writers, under the
    batch's stream locks (its context's path has a group): durable when this returns, so the
    listeners hear of it now."""
    group = pending.ctx.path.group
    assert group is not None
    result = group.submit(pending)
    _heard(pending, result)
    return result


def grouped_async(
    pending: PendingWrite, on_done: Callable[[WriteResult | BaseException], None]
) -> None:
    """`grouped` without waiting: `on_done` gets the result (or the error) on the thread that
    ran the batch, once the listeners have heard of it."""
    group = pending.ctx.path.group
    assert group is not None

    def done(outcome: WriteResult | BaseException) -> None:
        if isinstance(outcome, WriteResult):
            _heard(pending, outcome)
        on_done(outcome)

    group.submit_async(pending, done)


def _heard(pending: PendingWrite, result: WriteResult) -> None:
    """Tell the write path's listeners of the event a grouped write committed, if any."""
    if (event := result.event) is not None:
        run_after_commit(_bind(listener, event) for listener in pending.ctx.path.listeners)


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """A write authorized and checked, to be decided against its config's state under the
    config's stream lock: in its writer's own transaction, or in a group commit's batch."""

    service: str
    environment: str
    ctx: WriteContext
    new_document: Callable[[Document], Document] | None  # from the old plaintext; None: delete
    reason: str | None
    expected_version: int | None
    action: str | None = None
    rollback_of: int | None = None
    promoted_from: dict[str, Any] | None = None
    # Who may make it, when that is left to the batch (configsync.configs.deferred): opaque
    # here; a batch's work must have settled it before this module decides the write.
    authorization: object | None = None

    @property
    def stream(self) -> str:
        return stream_name(self.service, self.environment)


class StreamsBusy(Exception):
    """A batch's stream locks could not all be had in time (the cause says which wait ended)."""


@dataclass(frozen=True, slots=True)
class _Decided:
    """A write that changes its config: what to append, and what its answer needs."""

    ready: ReadyWrite
    document: Document  # plaintext
    stored: Document  # secret values sealed
    exists: bool


def decide_and_record(
    session: Session,
    writes: Sequence[PendingWrite],
    states: Sequence[WriteState] | None = None,
) -> list[WriteResult | Exception]:
    """Lock the writes' streams, decide each against its config's state, append the events of
    those that change something and apply the inline projections, in `session`'s transaction.
    `states`: the writes' streams already locked and read (lock_and_read's, in order).

    One outcome per write, in order: its result, or the error that refused it alone (a stale
    expected version, a document the limits refuse, a config to delete that is not there).
    Used for one write in its writer's own transaction, and for many by the group commit, whose
    batches hold at most one write per stream.
    """
    if any(w.authorization is not None for w in writes):
        raise RuntimeError("a write whose authorization is not settled cannot be decided")
    if states is None:
        with streams_busy(len(writes)):
            states = lock_and_read(session, [(w.service, w.environment) for w in writes])
    decided: list[_Decided | WriteResult | Exception] = []
    for write, (state, declared) in zip(writes, states, strict=True):
        try:
            decided.append(_decide(session, write, state, declared))
        except ConfigSyncError as refused:
            decided.append(refused)
    appended = iter(record(session, [d.ready for d in decided if isinstance(d, _Decided)]))
    outcomes: list[WriteResult | Exception] = []
    for write, decision in zip(writes, decided, strict=True):
        if not isinstance(decision, _Decided):
            outcomes.append(decision)
            continue
        event = next(appended)
        outcomes.append(event if isinstance(event, Exception) else _changed(write, decision, event))
    return outcomes


@contextlib.contextmanager
def streams_busy(writes: int) -> Iterator[None]:
    """Around the locking of a batch's streams: a lock wait that timed out is raised as
    StreamsBusy when the batch holds more than one write. A stream held too long by another
    transaction is not every write's fault: the group commit runs StreamsBusy's batch again
    write by write, so that only that stream's writers wait it out (and get the timeout); the
    others go through at once."""
    try:
        yield
    except OperationalError as error:
        if writes > 1 and is_lock_timeout(error):
            raise StreamsBusy from error
        raise


def _decide(
    session: Session,
    write: PendingWrite,
    state: current.CurrentConfig | None,
    declared: list[list[str]] | None,
) -> _Decided | WriteResult:
    """The event a write appends to a config in `state` (its current state, read under its
    stream lock), or its unchanged result if the document it makes is the current one."""
    ctx = write.ctx
    if ctx.service_existed is False and declared is not None:
        _made_meanwhile(session, write)
    version = state.version if state else 0
    exists = state is not None and not state.deleted
    if write.expected_version is not None and write.expected_version != version:
        raise VersionConflict(write.stream, write.expected_version, version)
    # current.read parsed the document just now: it is ours. The builders of the new document
    # (replace, merge patch, rollback, promote) never modify `old`, so neither needs a copy.
    # They work on plaintext; what is stored has every secret value sealed.
    old_stored: Document = state.document if exists and state else {}
    old: Document = ctx.vault.open(session, old_stored)
    deleting = write.new_document is None
    if write.new_document is None:
        if not exists:
            raise missing(write.service, write.environment, state)
        new: Document = {}
    else:
        new = write.new_document(old)
        if exists and state and documents_equal(old, new):
            if ctx.idempotency is not None:
                remember(session, [ctx.idempotency.row(write.stream, version, changed=False)])
            return _unchanged(state, old)

    sealer = ctx.vault.sealer(session, write.service, write.environment)
    rule = ctx.vault.rule(declared or [])
    stored = sealer.seal(rule, new, old, old_stored)
    changes = compute_changes(old_stored, stored)
    action = DELETED if deleting else write.action or (UPDATED if exists else CREATED)
    payload = ConfigChanged(
        action=action,
        changes=changes,
        reason=write.reason,
        rollback_of=write.rollback_of,
        deleted=deleting,
        promoted_from=write.promoted_from,
    )
    ready = ReadyWrite(
        event=NewEvent(
            write.stream, version, payload.to_data(), ctx.metadata(), type=CONFIG_CHANGED
        ),
        # Computed by the same code that rebuilds `current`.
        document_json=canonical_json(current.next_document(old_stored, changes)),
        creates_service=state is None and declared is None,
        owner_id=ctx.actor.id if ctx.actor.kind == "user" else None,
        idempotency=ctx.idempotency,
        keys=tuple(sealer.pending),
    )
    return _Decided(ready, new, stored, exists)


def _made_meanwhile(session: Session, write: PendingWrite) -> None:
    """The write's caller was authorized to create its service, and the service exists under
    the write's stream lock: made since, by this caller (the write goes on, as its owner's) or
    by someone else, whom the write was never checked against (409; sent again, it is)."""
    owner = session.scalar(select(ServiceRow.owner_id).where(ServiceRow.name == write.service))
    if owner != write.ctx.actor.id:
        raise AlreadyExists(
            f"service {write.service} was created by someone else while this write was in "
            "flight; send it again"
        )


def _changed(write: PendingWrite, decided: _Decided, event: StoredEvent) -> WriteResult:
    deleting = write.new_document is None
    return WriteResult(
        service=write.service,
        environment=write.environment,
        version=event.version,
        document=decided.document,
        changed=True,
        created=not decided.exists and not deleting,
        deleted=deleting,
        updated_at=event.recorded_at,
        updated_by=write.ctx.actor.as_json(),
        event=event,
        stored=decided.stored,
    )


def _on_commit(session: Session, ctx: WriteContext, event: StoredEvent) -> None:
    """Tell the write path's listeners of `event` once `session`'s transaction commits."""
    for listener in ctx.path.listeners:
        after_commit(session, _bind(listener, event))


@dataclass(frozen=True, slots=True)
class ReadyWrite:
    """A write decided under its stream lock: its event and what the inline projections need."""

    event: NewEvent
    document_json: str  # the document after the event, canonical JSON
    creates_service: bool  # the service had no row when the write was decided
    owner_id: str | None  # the owner a service this write creates gets
    idempotency: IdempotencyKey | None = None  # recorded with the event, in its transaction
    keys: tuple[dict[str, Any], ...] = ()  # data keys the write made: stored with its event


def record(session: Session, writes: Sequence[ReadyWrite]) -> list[StoredEvent | Exception]:
    """Append the writes' events and apply the inline projections, in `session`'s transaction.

    One outcome per write, in order: its stored event, or the error that refused it alone (a
    stale expected version; a service created by someone else since the write was decided).
    Used for one write in the writer's own transaction, and for many by the group commit.
    """
    if not writes:  # every write of a batch was refused or changed nothing
        return []
    outcomes: list[StoredEvent | Exception | None] = [None] * len(writes)
    for index, error in _create_services(session, writes).items():
        outcomes[index] = error
    _store_keys(session, [w for i, w in enumerate(writes) if outcomes[i] is None])
    waiting = [index for index, outcome in enumerate(outcomes) if outcome is None]
    events = [writes[i].event for i in waiting]
    # From here to the commit the append lock is held: only the statements that need the
    # appended events' positions, and nothing that could have been computed before. On
    # PostgreSQL they run in the append's own round trip: the inline projections' writes and
    # the change feed's notices (whose messages need no position).
    postgres = session.get_bind().dialect.name == "postgresql"
    alongside: list[Alongside] = []
    if postgres:
        alongside = inline_alongside([(writes[i].event, writes[i].document_json) for i in waiting])
        alongside.append(_notices(events))
    appended: list[tuple[StoredEvent, str]] = []
    began = time.perf_counter()
    BATCH_SIZE.observe(len(writes))
    for index, outcome in zip(waiting, append_batch(session, events, alongside), strict=True):
        outcomes[index] = outcome
        if isinstance(outcome, StoredEvent):
            appended.append((outcome, writes[index].document_json))
    if not postgres:
        apply_inline(session, appended)
    APPEND_SECONDS.observe(time.perf_counter() - began)
    remember(
        session,
        [
            key.row(outcome.stream, outcome.version, changed=True)
            for write, outcome in zip(writes, outcomes, strict=True)
            if isinstance(outcome, StoredEvent) and (key := write.idempotency) is not None
        ],
    )
    return [outcome for outcome in outcomes if outcome is not None]


# feed.notify's messages for a batch's events, sent beside their append (one per event
# appended; pg_notify is transactional, as feed.notify says).
_NOTIFY_APPENDED = (
    "SELECT pg_notify(%s, m.payload) FROM unnest(%s::text[]) WITH ORDINALITY AS m(payload, n)"
    " JOIN appended a ON a.o_index = m.n WHERE a.o_position IS NOT NULL"
)


def _notices(events: Sequence[NewEvent]) -> Alongside:
    payloads = []
    for event in events:
        service, environment = split_stream(event.stream)
        payloads.append(encode(ConfigMoved(service, environment, event.expected_version + 1)))
    return Alongside(_NOTIFY_APPENDED, (CHANNEL, payloads))


def _create_services(session: Session, writes: Sequence[ReadyWrite]) -> dict[int, Exception]:
    """Make the rows of services created by these writes; refuse writes that lost a race.

    A write that found no service when it was decided creates it, owned by its writer. If
    another writer's service of the same name appeared since, this write was authorized against
    a service that is not the one it would write to: it is refused (409), and sent again it is
    authorized against the real owner.
    """
    creating = {index: write for index, write in enumerate(writes) if write.creates_service}
    if not creating:
        return {}
    rows: dict[str, dict[str, Any]] = {}
    for write in creating.values():
        service, _ = split_stream(write.event.stream)
        rows.setdefault(
            service, {"name": service, "owner_id": write.owner_id, "created_at": utcnow()}
        )
    insert_missing(session, ServiceRow, list(rows.values()), key=["name"])
    found = session.execute(
        select(ServiceRow.name, ServiceRow.owner_id).where(ServiceRow.name.in_(list(rows)))
    )
    owners = {row.name: row.owner_id for row in found}
    refused: dict[int, Exception] = {}
    for index, write in creating.items():
        service, _ = split_stream(write.event.stream)
        if owners.get(service) != write.owner_id:
            refused[index] = AlreadyExists(
                f"service {service} was created by someone else while this write was in "
                "flight; send it again"
            )
    return refused


def _store_keys(session: Session, writes: Sequence[ReadyWrite]) -> None:
    """Store the data keys the writes made, in their events' transaction. A plain INSERT: a
    data key is made under its stream's lock and the fingerprint key (on SQLite, the only
    database where a write makes it) under the database's one write lock, so none can exist
    already; if one ever did, the batch fails loudly instead of keeping a value sealed under a
    key nobody has."""
    rows = [row for write in writes for row in write.keys]
    if rows:
        session.execute(insert(SecretKeyRow), rows)


def _bind(listener: EventListener, event: StoredEvent) -> Callable[[], None]:
    return lambda: listener(event)


def _replay(session: Session, used: Used, vault: Vault) -> WriteResult:
    """The outcome a retried request had the first time, rebuilt from the log."""
    service, environment = split_stream(used.stream)
    (event,) = read_stream(
        session, used.stream, from_version=used.version, up_to_version=used.version
    )
    payload = ConfigChanged.from_data(event.data, event.version)
    past = state_at(session, service, environment, used.version)
    return WriteResult(
        service=service,
        environment=environment,
        version=used.version,
        document=vault.open(session, past.document),
        changed=used.changed,
        created=used.changed and payload.action == CREATED,
        deleted=payload.deleted,
        updated_at=event.recorded_at,
        updated_by=event.metadata.get("actor") or {},
        event=event if used.changed else None,
        stored=past.document,
    )


def _unchanged(state: current.CurrentConfig, plain: Document) -> WriteResult:
    return WriteResult(
        service=state.service,
        environment=state.environment,
        version=state.version,
        document=plain,
        changed=False,
        created=False,
        deleted=False,
        updated_at=state.updated_at,
        updated_by=state.updated_by,
        event=None,
        stored=state.document,
    )


def check_reason(reason: str | None, limit: int) -> None:
    if reason is not None and len(reason) > limit:
        raise InvalidInput(f"reason is {len(reason)} characters long; the limit is {limit}")


def rollback(
    session: Session,
    service: str,
    environment: str,
    to_version: int,
    ctx: WriteContext,
    *,
    reason: str | None = None,
    expected_version: int | None = None,
) -> WriteResult:
    """Append a new version whose document is version `to_version`'s. History is not rewritten.

    Rolling back to the current document appends nothing (changed is False); rolling back a
    deleted config re-creates it.
    """
    target = state_at(session, service, environment, to_version)
    if target.deleted:
        raise InvalidInput(
            f"version {to_version} of {service}/{environment} is a deletion; "
            "roll back to a version that has a document, or DELETE the config"
        )
    lost = ctx.vault.destroyed_paths(session, target.document)
    if lost:
        raise InvalidInput(
            f"version {to_version} of {service}/{environment} holds secret values that were "
            f"destroyed ({', '.join('.'.join(map(str, p)) for p in lost[:5])}); "
            "roll back to a later version"
        )
    document = ctx.vault.open(session, target.document)
    return submit(
        session,
        pending_write(
            service,
            environment,
            ctx,
            lambda _old: document,
            reason,
            expected_version,
            action=ROLLED_BACK,
            rollback_of=to_version,
        ),
    )


def promote(
    session: Session,
    service: str,
    from_environment: str,
    to_environment: str,
    ctx: WriteContext,
    *,
    keys: list[str] | None = None,
    reason: str | None = None,
    expected_version: int | None = None,
) -> WriteResult:
    """Copy the current document of one environment, or only `keys` of it, into another."""
    validate_name("environment", to_environment)
    if from_environment == to_environment:
        raise InvalidInput("promote needs a different target environment")
    source = get(session, service, from_environment)
    # Opened here and sealed again under the target environment's data key when decided.
    document = ctx.vault.open(session, source.document)
    if keys is not None:
        missing = [k for k in keys if k not in document]
        if missing:
            raise InvalidInput(
                f"{service}/{from_environment} has no key {', '.join(map(repr, missing[:10]))}"
            )

    def promoted(old: Document) -> Document:
        if keys is None:
            return copy_document(document)
        new = dict(old)
        new.update({k: document[k] for k in keys})
        validate_document(new, ctx.limits)
        return new

    return submit(
        session,
        pending_write(
            service,
            to_environment,
            ctx,
            promoted,
            reason,
            expected_version,
            action=PROMOTED,
            promoted_from={"environment": from_environment, "version": source.version},
        ),
    )


@dataclass(frozen=True, slots=True)
class Destruction:
    result: WriteResult
    destroyed_keys: list[str]
    # The last version whose secret values can no longer be read: `up_to_version`, or later
    # when versions after it were sealed under a generation that had to go with it.
    through_version: int


def destroy_secrets(
    session: Session,
    service: str,
    environment: str,
    up_to_version: int,
    ctx: WriteContext,
    *,
    reason: str | None = None,
) -> Destruction:
    """Crypto-shred the secret values of versions up to `up_to_version`.

    In one transaction: the current secret values are sealed afresh under a new data key
    generation, in a new event that records the destruction; then every data key that sealed a
    value of those versions is destroyed. The chain still verifies (it covers ciphertext); the
    history still shows that the values existed and changed; old versions read as destroyed.
    Nothing sealed there to destroy: nothing is appended.
    """
    validate_name("service", service)
    validate_name("environment", environment)
    check_reason(reason, ctx.max_reason_length)
    if ctx.used is not None:
        replayed = _replay(session, ctx.used, ctx.vault)
        done = (replayed.event.data.get("secrets_destroyed") if replayed.event else None) or {}
        return Destruction(replayed, done.get("keys", []), done.get("through_version", 0))
    stream = stream_name(service, environment)
    ((state, declared),) = lock_and_read(session, [(service, environment)])
    if state is None:
        raise NotFound(f"config {service}/{environment} not found")
    if not 1 <= up_to_version <= state.version:
        raise InvalidInput(
            f"up_to_version must be between 1 and the current version, {state.version}"
        )
    events = read_stream(session, stream)
    doomed = _keys_of(e for e in events if e.version <= up_to_version)
    if doomed:
        doomed &= set(
            session.scalars(
                select(SecretKeyRow.id).where(
                    SecretKeyRow.id.in_(doomed), SecretKeyRow.wrapped.is_not(None)
                )
            )
        )
    plain = ctx.vault.open(session, state.document)
    if not doomed:
        return Destruction(_unchanged(state, plain), [], up_to_version)
    through = max([up_to_version, *(e.version for e in events if _keys_of([e]) & doomed)])
    sealer = ctx.vault.sealer(session, service, environment)
    rule = ctx.vault.rule(declared or [])
    stored = sealer.reseal(rule, plain, state.document)
    changes = compute_changes(state.document, stored)
    payload = ConfigChanged(
        action=DESTROYED,
        changes=changes,
        reason=reason,
        deleted=state.deleted,
        secrets_destroyed={
            "up_to_version": up_to_version,
            "through_version": through,
            "keys": sorted(doomed),
        },
    )
    ready = ReadyWrite(
        event=NewEvent(
            stream, state.version, payload.to_data(), ctx.metadata(), type=CONFIG_CHANGED
        ),
        document_json=canonical_json(current.next_document(state.document, changes)),
        creates_service=False,
        owner_id=None,
        idempotency=ctx.idempotency,
        keys=tuple(sealer.pending),
    )
    # In this transaction, not the group's: the event and the keys' destruction commit together.
    (event,) = record(session, [ready])
    if isinstance(event, Exception):
        raise event
    _on_commit(session, ctx, event)
    destroyed = ctx.vault.destroy(session, doomed)
    notify(session, [KeysDestroyed(tuple(destroyed))])
    result = WriteResult(
        service=service,
        environment=environment,
        version=event.version,
        document=plain,
        changed=True,
        created=False,
        deleted=state.deleted,
        updated_at=event.recorded_at,
        updated_by=ctx.actor.as_json(),
        event=event,
        stored=stored,
    )
    return Destruction(result, destroyed, through)


def _keys_of(events: Iterable[StoredEvent]) -> set[str]:
    """The data keys that sealed any value the events' changes hold (new or old)."""
    return key_ids(
        change.get(side)
        for event in events
        if event.type == CONFIG_CHANGED
        for change in event.data["changes"]
        for side in ("value", "old")
    )


def record_reveal(
    session: Session,
    service: str,
    environment: str,
    from_version: int,
    to_version: int,
    paths: list[list[str | int]],
    ctx: WriteContext,
) -> StoredEvent:
    """Append to the log that the actor was shown these secret values in plain text."""
    stream = reveals_stream(service, environment)
    lock_stream(session, stream)
    payload = SecretsRevealed(service, environment, from_version, to_version, paths)
    event = append(
        session,
        stream,
        stream_version(session, stream),
        payload.to_data(),
        ctx.metadata(),
        type=SECRETS_REVEALED,
    )
    _on_commit(session, ctx, event)
    return event


def declare_secrets(session: Session, service: str, paths: list[str]) -> None:
    """Set the key paths `service`'s owner declares secret (dotted; the whole list)."""
    parsed = sorted({tuple(parse_key(path)) for path in paths})
    row = session.get(ServiceRow, service)
    if row is None:
        raise NotFound(f"service {service!r} not found")
    row.secret_paths = canonical_json([list(path) for path in parsed])
    session.flush()
