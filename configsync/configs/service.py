"""The config domain's write and read rules: replace, merge-patch, delete, read at a version.

Functions take the caller's Session and never commit: the caller's unit of work does, and the
callbacks registered with `after_commit` (task dispatch, change feed) run only once it has.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from configsync.configs.documents import (
    DEFAULT_ENVIRONMENT,
    Change,
    Document,
    Limits,
    apply_changes,
    compute_changes,
    copy_document,
    documents_equal,
    merge_patch,
    summarize,
    validate_document,
    validate_name,
)
from configsync.configs.models import ServiceRow
from configsync.db import after_commit, insert_missing, utcnow
from configsync.errors import AlreadyExists, Deleted, InvalidInput, NotFound, VersionConflict
from configsync.events import (
    NewEvent,
    StoredEvent,
    append_batch,
    lock_stream,
    read_stream,
    split_stream,
    stream_name,
    stream_version,
    version_at,
)
from configsync.events.canonical import canonical_json
from configsync.events.group import GroupCommit
from configsync.feed import announce_locally, notify
from projections import current, snapshots

CREATED, UPDATED, DELETED = "created", "updated", "deleted"
ROLLED_BACK, PROMOTED = "rolled_back", "promoted"

# Sessions made by a factory whose info carries this key call each listener with every event
# they commit, after the commit (see configsync.db.after_commit).
EVENT_LISTENERS = "configsync.event_listeners"
EventListener = Callable[[StoredEvent], None]
# Sessions whose info carries a GroupCommit under this key hand it their appends, which then
# share transactions with other writers' (configsync.events.group); the app sets one on
# PostgreSQL. Without one, a write appends in the caller's own transaction.
GROUP_COMMIT = "configsync.group_commit"


@dataclass(frozen=True, slots=True)
class Actor:
    kind: str  # "user" | "api_key" | "system"
    id: str
    name: str

    def as_json(self) -> dict[str, str]:
        return {"kind": self.kind, "id": self.id, "name": self.name}


SYSTEM = Actor(kind="system", id="system", name="configsync")


@dataclass(frozen=True, slots=True)
class WriteContext:
    actor: Actor
    request_id: str | None = None
    client: str | None = None
    limits: Limits = field(default_factory=Limits)
    max_reason_length: int = 1000

    def metadata(self) -> dict[str, Any]:
        return {"actor": self.actor.as_json(), "request_id": self.request_id, "client": self.client}


@dataclass(frozen=True, slots=True)
class WriteResult:
    service: str
    environment: str
    version: int
    document: Document
    changed: bool
    created: bool
    deleted: bool
    updated_at: datetime
    updated_by: dict[str, Any]
    event: StoredEvent | None


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
    validate_document(document, ctx.limits)
    return _write(
        session, service, environment, ctx, lambda _old: document, reason, expected_version
    )


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
    if not isinstance(merge, dict):
        raise InvalidInput("a merge patch of a config must be a JSON object")

    def patched(old: Document) -> Document:
        new = merge_patch(old, merge)
        assert isinstance(new, dict)
        validate_document(new, ctx.limits)
        return new

    return _write(session, service, environment, ctx, patched, reason, expected_version)


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
    return _write(session, service, environment, ctx, None, reason, expected_version, deleting=True)


def _write(
    session: Session,
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
    extra: dict[str, Any] | None = None,
) -> WriteResult:
    validate_name("service", service)
    validate_name("environment", environment)
    check_reason(reason, ctx.max_reason_length)
    stream = stream_name(service, environment)
    # Held to the end of the transaction: the changes computed below are against the document
    # that is really current when the event is appended.
    lock_stream(session, stream)
    state = current.read(session, service, environment)
    version = state.version if state else 0
    exists = state is not None and not state.deleted
    if expected_version is not None and expected_version != version:
        raise VersionConflict(stream, expected_version, version)
    # current.read parsed the document just now: it is ours. The builders of the new document
    # (replace, merge patch, rollback, promote) never modify `old`, so neither needs a copy.
    old: Document = state.document if exists and state else {}

    if deleting:
        if not exists:
            raise _missing(service, environment, state)
        new: Document = {}
    else:
        assert new_document is not None
        new = new_document(old)
        if exists and state and documents_equal(old, new):
            return _unchanged(state)

    changes = compute_changes(old, new)
    if deleting:
        action = DELETED
    elif action is None:
        action = UPDATED if exists else CREATED
    data: dict[str, Any] = {
        "action": action,
        "changes": changes,
        "reason": reason,
        "rollback_of": rollback_of,
        "deleted": deleting,
    }
    data.update(extra or {})
    ready = ReadyWrite(
        event=NewEvent(stream, version, data, ctx.metadata()),
        # Computed here, outside the append lock, and by the same code that rebuilds `current`.
        document_json=canonical_json(current.next_document(old, changes)),
        creates_service=not exists and session.get(ServiceRow, service) is None,
        owner_id=ctx.actor.id if ctx.actor.kind == "user" else None,
    )
    group: GroupCommit[ReadyWrite, StoredEvent] | None = session.info.get(GROUP_COMMIT)
    if group is not None:
        # Durable when this returns, in a transaction shared with other writers; this session
        # still holds the stream lock, which its commit releases.
        event = group.submit(ready)
    else:
        (outcome,) = record(session, [ready])
        if isinstance(outcome, Exception):
            raise outcome
        event = outcome
    announce_locally(session, f"config:{stream}:{event.version}")
    for listener in session.info.get(EVENT_LISTENERS, ()):
        after_commit(session, _bind(listener, event))
    return WriteResult(
        service=service,
        environment=environment,
        version=event.version,
        document=new,
        changed=True,
        created=not exists and not deleting,
        deleted=deleting,
        updated_at=event.recorded_at,
        updated_by=ctx.actor.as_json(),
        event=event,
    )


@dataclass(frozen=True, slots=True)
class ReadyWrite:
    """A write computed under its stream lock: its event and what the inline projections need."""

    event: NewEvent
    document_json: str  # the document after the event, canonical JSON
    creates_service: bool  # the service had no row when the write was authorized
    owner_id: str | None  # the owner a service this write creates gets


def record(session: Session, writes: Sequence[ReadyWrite]) -> list[StoredEvent | Exception]:
    """Append the writes' events and apply the inline projections, in `session`'s transaction.

    One outcome per write, in order: its stored event, or the error that refused it alone (a
    stale expected version; a service created by someone else since the write was authorized).
    Used for one write in the writer's own transaction, and for many by the group commit.
    """
    outcomes: list[StoredEvent | Exception | None] = [None] * len(writes)
    for index, error in _create_services(session, writes).items():
        outcomes[index] = error
    waiting = [index for index, outcome in enumerate(outcomes) if outcome is None]
    # From here to the commit the append lock is held: only the statements that need the
    # appended events' positions, and nothing that could have been computed before.
    appended: list[tuple[StoredEvent, str]] = []
    for index, outcome in zip(
        waiting, append_batch(session, [writes[i].event for i in waiting]), strict=True
    ):
        outcomes[index] = outcome
        if isinstance(outcome, StoredEvent):
            appended.append((outcome, writes[index].document_json))
    current.apply_all(session, appended)
    snapshots.apply_all(session, appended)
    notify(session, [f"config:{event.stream}:{event.version}" for event, _ in appended])
    return [outcome for outcome in outcomes if outcome is not None]


def _create_services(session: Session, writes: Sequence[ReadyWrite]) -> dict[int, Exception]:
    """Make the rows of services created by these writes; refuse writes that lost a race.

    A write that found no service when it was authorized creates it, owned by its writer. If
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


def _bind(listener: EventListener, event: StoredEvent) -> Callable[[], None]:
    return lambda: listener(event)


def _unchanged(state: current.CurrentConfig) -> WriteResult:
    return WriteResult(
        service=state.service,
        environment=state.environment,
        version=state.version,
        document=state.document,
        changed=False,
        created=False,
        deleted=False,
        updated_at=state.updated_at,
        updated_by=state.updated_by,
        event=None,
    )


def check_reason(reason: str | None, limit: int) -> None:
    if reason is not None and len(reason) > limit:
        raise InvalidInput(f"reason is {len(reason)} characters long; the limit is {limit}")


def service_owner(session: Session, service: str) -> str | None:
    return session.scalar(select(ServiceRow.owner_id).where(ServiceRow.name == service))


def _missing(service: str, environment: str, state: current.CurrentConfig | None) -> NotFound:
    if state is not None and state.deleted:
        return Deleted(
            f"config {service}/{environment} was deleted at version {state.version}",
            deleted_at_version=state.version,
        )
    return NotFound(f"config {service}/{environment} not found")


def get(
    session: Session, service: str, environment: str = DEFAULT_ENVIRONMENT
) -> current.CurrentConfig:
    """The current config; NotFound if it never existed, Deleted if it was deleted."""
    validate_name("service", service)
    validate_name("environment", environment)
    state = current.read(session, service, environment)
    if state is None or state.deleted:
        raise _missing(service, environment, state)
    return state


@dataclass(frozen=True, slots=True)
class PastConfig:
    service: str
    environment: str
    version: int
    document: Document
    deleted: bool
    recorded_at: datetime
    actor: dict[str, Any]


def state_at(session: Session, service: str, environment: str, version: int) -> PastConfig:
    """The config right after `version` was appended (deleted or not).

    Folds from the nearest snapshot at or below `version`, so the cost does not grow with
    the length of the history.
    """
    validate_name("service", service)
    validate_name("environment", environment)
    if version < 1:
        raise InvalidInput("version must be 1 or more")
    stream = stream_name(service, environment)
    snap = snapshots.latest(session, stream, version)
    events = read_stream(
        session, stream, from_version=snap.version if snap else 1, up_to_version=version
    )
    if not events or events[-1].version != version:
        raise NotFound(f"config {service}/{environment} has no version {version}")
    document: Document = snap.document if snap else {}
    for event in events[1:] if snap else events:
        document = apply_changes(document, event.data["changes"])
    last = events[-1]
    return PastConfig(
        service=service,
        environment=environment,
        version=version,
        document=document,
        deleted=bool(last.data.get("deleted")),
        recorded_at=last.recorded_at,
        actor=last.metadata.get("actor") or {},
    )


def get_version(session: Session, service: str, environment: str, version: int) -> PastConfig:
    """The document as it was at `version`; Deleted if that version deleted it."""
    return _present(state_at(session, service, environment, version), f"version {version}")


def get_as_of(session: Session, service: str, environment: str, instant: datetime) -> PastConfig:
    """The document as it was at `instant`."""
    validate_name("service", service)
    validate_name("environment", environment)
    version = version_at(session, stream_name(service, environment), instant)
    if version == 0:
        raise NotFound(f"config {service}/{environment} did not exist at {instant.isoformat()}")
    return _present(state_at(session, service, environment, version), instant.isoformat())


def _present(state: PastConfig, when: str) -> PastConfig:
    if state.deleted:
        raise Deleted(
            f"config {state.service}/{state.environment} was deleted at {when}",
            deleted_at_version=state.version,
        )
    return state


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
    return _write(
        session,
        service,
        environment,
        ctx,
        lambda _old: target.document,
        reason,
        expected_version,
        action=ROLLED_BACK,
        rollback_of=to_version,
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
    if keys is not None:
        missing = [k for k in keys if k not in source.document]
        if missing:
            raise InvalidInput(
                f"{service}/{from_environment} has no key {', '.join(map(repr, missing[:10]))}"
            )

    def promoted(old: Document) -> Document:
        if keys is None:
            return copy_document(source.document)
        new = dict(old)
        new.update({k: source.document[k] for k in keys})
        validate_document(new, ctx.limits)
        return new

    return _write(
        session,
        service,
        to_environment,
        ctx,
        promoted,
        reason,
        expected_version,
        action=PROMOTED,
        extra={"promoted_from": {"environment": from_environment, "version": source.version}},
    )


def action_of(event: StoredEvent) -> str:
    recorded = event.data.get("action")
    if isinstance(recorded, str):
        return recorded
    if event.data.get("deleted"):
        return DELETED
    if event.data.get("rollback_of"):
        return ROLLED_BACK
    return CREATED if event.version == 1 else UPDATED


@dataclass(frozen=True, slots=True)
class HistoryPage:
    items: list[dict[str, Any]]
    next_before_version: int | None


def history(
    session: Session,
    service: str,
    environment: str,
    *,
    limit: int = 50,
    before_version: int | None = None,
) -> HistoryPage:
    """Versions newest first, `limit` at a time; page on with `before_version`."""
    validate_name("service", service)
    validate_name("environment", environment)
    events = read_stream(
        session,
        stream_name(service, environment),
        up_to_version=before_version - 1 if before_version is not None else None,
        newest_first=True,
        limit=limit,
    )
    if not events and before_version is None:
        raise NotFound(f"config {service}/{environment} not found")
    items = [
        {
            "version": e.version,
            "recorded_at": e.recorded_at,
            "actor": e.metadata.get("actor"),
            "action": action_of(e),
            "summary": summarize(e.data["changes"]),
            "reason": e.data.get("reason"),
            "rollback_of": e.data.get("rollback_of"),
            "promoted_from": e.data.get("promoted_from"),
            "position": e.position,
        }
        for e in events
    ]
    last = events[-1].version if events else 1
    return HistoryPage(
        items=items, next_before_version=last if len(events) == limit and last > 1 else None
    )


def describe_changes(changes: list[Change]) -> dict[str, Any]:
    """Changes as the diff endpoints show them: op, path, old and new, plus counts."""
    shown = []
    stats = {"added": 0, "removed": 0, "changed": 0}
    for change in changes:
        item: dict[str, Any] = {"op": change["op"], "path": change["path"]}
        if "old" in change:
            item["old"] = change["old"]
        if "value" in change:
            item["new"] = change["value"]
        shown.append(item)
        stats[{"add": "added", "remove": "removed", "replace": "changed"}[change["op"]]] += 1
    return {"changes": shown, "stats": stats}


def diff(
    session: Session, service: str, environment: str, from_version: int, to_version: int | None
) -> dict[str, Any]:
    """What changed between two versions (`to_version` defaults to the current one)."""
    if to_version is None:
        to_version = stream_version(session, stream_name(service, environment))
        if to_version == 0:
            raise NotFound(f"config {service}/{environment} not found")
    a = state_at(session, service, environment, from_version)
    b = state_at(session, service, environment, to_version)
    return {
        "from": from_version,
        "to": to_version,
        **describe_changes(compute_changes(a.document, b.document)),
    }


def compare(
    session: Session, service: str, from_environment: str, to_environment: str
) -> dict[str, Any]:
    """What differs between two environments' current documents."""
    a = get(session, service, from_environment)
    b = get(session, service, to_environment)
    return {
        "service": service,
        "from_env": from_environment,
        "to_env": to_environment,
        "from_version": a.version,
        "to_version": b.version,
        **describe_changes(compute_changes(a.document, b.document)),
    }
