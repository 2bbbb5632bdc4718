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
    Document,
    Limits,
    compute_changes,
    copy_document,
    documents_equal,
    fold,
    merge_patch,
    validate_document,
    validate_name,
)
from configsync.configs.models import ServiceRow
from configsync.db import after_commit, utcnow
from configsync.errors import Deleted, InvalidInput, NotFound, VersionConflict
from configsync.events import StoredEvent, append, lock_stream, read_stream, stream_name
from configsync.feed import announce
from projections import current

# Sessions made by a factory whose info carries this key call each listener with every event
# they commit, after the commit (see configsync.db.after_commit).
EVENT_LISTENERS = "configsync.event_listeners"
EventListener = Callable[[StoredEvent], None]


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
    old: Document = copy_document(state.document) if exists and state else {}

    if deleting:
        if not exists:
            raise _missing(service, environment, state)
        new: Document = {}
    else:
        assert new_document is not None
        new = new_document(copy_document(old))
        if exists and state and documents_equal(old, new):
            return _unchanged(state)

    changes = compute_changes(old, new)
    data: dict[str, Any] = {
        "changes": changes,
        "reason": reason,
        "rollback_of": None,
        "deleted": deleting,
    }
    data.update(extra or {})
    if not exists:
        ensure_service(session, service, ctx.actor)
    # Announced before the append so that it costs no round trip under the append lock; the
    # message is transactional, so it goes out only if this append commits.
    announce(session, f"config:{stream}:{version + 1}")
    event = append(session, stream, version, data, ctx.metadata())
    current.apply(session, event, document_before=old)
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


def ensure_service(session: Session, service: str, actor: Actor) -> ServiceRow:
    """The service's row, made on its first write with the writing person as its owner."""
    row = session.get(ServiceRow, service)
    if row is None:
        row = ServiceRow(
            name=service,
            owner_id=actor.id if actor.kind == "user" else None,
            created_at=utcnow(),
        )
        session.add(row)
        session.flush()
    return row


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
    recorded_at: datetime
    actor: dict[str, Any]


def get_version(session: Session, service: str, environment: str, version: int) -> PastConfig:
    """The document as it was right after `version` was appended."""
    validate_name("service", service)
    validate_name("environment", environment)
    if version < 1:
        raise InvalidInput("version must be 1 or more")
    events = read_stream(session, stream_name(service, environment), up_to_version=version)
    return _past(service, environment, events, f"version {version}", exact=version)


def get_as_of(session: Session, service: str, environment: str, instant: datetime) -> PastConfig:
    """The document as it was at `instant`."""
    validate_name("service", service)
    validate_name("environment", environment)
    events = read_stream(session, stream_name(service, environment), until=instant)
    return _past(service, environment, events, f"{instant.isoformat()}")


def _past(
    service: str,
    environment: str,
    events: Sequence[StoredEvent],
    when: str,
    exact: int | None = None,
) -> PastConfig:
    if not events or (exact is not None and events[-1].version != exact):
        raise NotFound(f"config {service}/{environment} has no {when}")
    state = fold(events)
    if state.deleted:
        raise Deleted(
            f"config {service}/{environment} was deleted at {when}",
            deleted_at_version=state.version,
        )
    last = events[-1]
    return PastConfig(
        service=service,
        environment=environment,
        version=state.version,
        document=state.document,
        recorded_at=last.recorded_at,
        actor=last.metadata.get("actor") or {},
    )
