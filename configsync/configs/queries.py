"""The config domain's reads: current and past states, history, diffs, compare, listings.

Queries take the caller's Session, write nothing and return typed values; the endpoints shape
them into answers. All the SQL of the config endpoints is here or in the store and projections.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from configsync.auth.models import ServiceRow
from configsync.auth.permissions import Caller, readable
from configsync.db import UTCDateTime
from configsync.domain.documents import (
    Change,
    Document,
    apply_changes,
    compute_changes,
    touches,
)
from configsync.domain.events import CONFIG_CHANGED, ConfigChanged, stream_name, summarize
from configsync.domain.names import DEFAULT_ENVIRONMENT, validate_name
from configsync.domain.secrets import Path, envelopes, is_envelope, lookup, mask
from configsync.errors import Deleted, InvalidInput, NotFound
from configsync.events import StoredEvent, lock_stream, read_stream, stream_version, version_at
from configsync.events.canonical import loads
from configsync.events.store import STREAM_LOCK_NAMESPACE
from configsync.secrets.vault import Vault
from projections import current, snapshots
from projections.current import ConfigCurrentRow, CurrentConfig


def missing(service: str, environment: str, state: current.CurrentConfig | None) -> NotFound:
    """The error for a config that is not there: Deleted (with its version) or NotFound."""
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
        raise missing(service, environment, state)
    return state


def latest_version(session: Session, service: str, environment: str) -> int:
    """The config's last version, deletions included (0: it never existed)."""
    return stream_version(session, stream_name(service, environment))


@dataclass(frozen=True, slots=True)
class ConfigSummary:
    service: str
    environment: str
    version: int
    updated_at: datetime
    owner_id: str | None


def list_readable(
    session: Session,
    caller: Caller,
    *,
    service: str | None = None,
    has_key: list[str] | None = None,
) -> list[ConfigSummary]:
    """The configs `caller` may read (not deleted), by service and environment; only `service`'s,
    and only those whose document has the key path `has_key`, when given."""
    columns = [
        ConfigCurrentRow.service,
        ConfigCurrentRow.environment,
        ConfigCurrentRow.version,
        ConfigCurrentRow.updated_at,
        ServiceRow.owner_id,
    ]
    if has_key is not None:  # the documents, only when they are searched
        columns.append(ConfigCurrentRow.data)
    query = (
        select(*columns)
        .join(ServiceRow, ServiceRow.name == ConfigCurrentRow.service)
        .where(ConfigCurrentRow.deleted.is_(False))
        .where(
            readable(
                caller, ConfigCurrentRow.service, ConfigCurrentRow.environment, ServiceRow.owner_id
            )
        )
        .order_by(ConfigCurrentRow.service, ConfigCurrentRow.environment)
    )
    if service is not None:
        query = query.where(ConfigCurrentRow.service == service)
    found = []
    for row in session.execute(query):
        if has_key is None or lookup(loads(row.data), tuple(has_key))[0]:
            found.append(
                ConfigSummary(
                    row.service, row.environment, row.version, row.updated_at, row.owner_id
                )
            )
    return found


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
    if instant.tzinfo is None:
        raise InvalidInput("as_of needs a time zone, such as 2026-01-01T00:00:00Z")
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


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    version: int
    recorded_at: datetime
    actor: dict[str, Any] | None
    action: str
    summary: str
    reason: str | None
    rollback_of: int | None
    promoted_from: dict[str, Any] | None
    position: int

    @classmethod
    def of(cls, event: StoredEvent) -> HistoryEntry:
        payload = ConfigChanged.from_data(event.data, event.version)
        return cls(
            version=event.version,
            recorded_at=event.recorded_at,
            actor=event.metadata.get("actor"),
            action=payload.action,
            summary=summarize(payload.changes),
            reason=payload.reason,
            rollback_of=payload.rollback_of,
            promoted_from=payload.promoted_from,
            position=event.position,
        )


@dataclass(frozen=True, slots=True)
class VersionState:
    entry: HistoryEntry
    document: Document
    deleted: bool


def versions(session: Session, service: str, environment: str) -> list[VersionState]:
    """Every version with its document, newest first: one fold of the whole stream (the
    original implementation's version list; v1 pages history and reads one version at a time)."""
    validate_name("service", service)
    validate_name("environment", environment)
    document: Document = {}
    states = []
    for event in read_stream(session, stream_name(service, environment)):
        if event.type != CONFIG_CHANGED:
            continue
        document = apply_changes(document, event.data["changes"])
        kept = copy.deepcopy(document)  # the fold goes on changing `document` in place
        states.append(VersionState(HistoryEntry.of(event), kept, bool(event.data.get("deleted"))))
    return states[::-1]


@dataclass(frozen=True, slots=True)
class HistoryPage:
    items: list[HistoryEntry]
    next_before_version: int | None


def history(
    session: Session,
    service: str,
    environment: str,
    *,
    limit: int = 50,
    before_version: int | None = None,
    key: list[str] | None = None,
) -> HistoryPage:
    """Versions newest first, `limit` at a time; page on with `before_version`. With `key`,
    only the versions that changed that key path, something inside it or containing it."""
    validate_name("service", service)
    validate_name("environment", environment)
    events = read_stream(
        session,
        stream_name(service, environment),
        up_to_version=before_version - 1 if before_version is not None else None,
        newest_first=True,
        limit=limit if key is None else None,  # a key filter reads on until the page is full
    )
    if not events and before_version is None:
        raise NotFound(f"config {service}/{environment} not found")
    kept = [
        e
        for e in events
        if e.type == CONFIG_CHANGED and (key is None or touches(e.data["changes"], key))
    ][: limit + 1]
    if key is None:
        last = events[-1].version if events else 1
        more = len(events) == limit and last > 1
    else:
        more = len(kept) > limit
        kept = kept[:limit]
        last = kept[-1].version if kept else 1
    return HistoryPage(
        items=[HistoryEntry.of(e) for e in kept], next_before_version=last if more else None
    )


@dataclass(frozen=True, slots=True)
class Difference:
    """Changes as the diff endpoints show them: op, path, old and new, plus counts."""

    changes: list[dict[str, Any]]
    stats: dict[str, int]

    @classmethod
    def of(cls, changes: list[Change]) -> Difference:
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
        return cls(changes=shown, stats=stats)


@dataclass(frozen=True, slots=True)
class VersionDiff:
    from_version: int
    to_version: int
    difference: Difference
    revealed: list[Path]  # the secret values shown in plain text (with `reveal` only)


def diff(
    session: Session,
    service: str,
    environment: str,
    from_version: int,
    to_version: int | None,
    *,
    reveal: Vault | None = None,
) -> VersionDiff:
    """What changed between two versions (`to_version` defaults to the current one).

    Secret values are masked (equal fingerprints: no change), unless `reveal` opens them.
    """
    if to_version is None:
        to_version = stream_version(session, stream_name(service, environment))
        if to_version == 0:
            raise NotFound(f"config {service}/{environment} not found")
    a = state_at(session, service, environment, from_version)
    b = state_at(session, service, environment, to_version)
    if reveal is None:
        changes = compute_changes(mask(a.document), mask(b.document))
        return VersionDiff(from_version, to_version, Difference.of(changes), [])
    changes = compute_changes(reveal.open(session, a.document), reveal.open(session, b.document))
    sealed = {path for doc in (a.document, b.document) for path, _ in envelopes(doc)}
    shown = sorted((p for p in sealed if touches(changes, list(p))), key=str)  # type: ignore[arg-type]
    return VersionDiff(from_version, to_version, Difference.of(changes), shown)


@dataclass(frozen=True, slots=True)
class Comparison:
    service: str
    from_environment: str
    to_environment: str
    from_version: int
    to_version: int
    difference: Difference


def compare(
    session: Session, service: str, from_environment: str, to_environment: str
) -> Comparison:
    """What differs between two environments' current documents."""
    a = get(session, service, from_environment)
    b = get(session, service, to_environment)
    return Comparison(
        service=service,
        from_environment=from_environment,
        to_environment=to_environment,
        from_version=a.version,
        to_version=b.version,
        difference=Difference.of(compute_changes(mask(a.document), mask(b.document))),
    )


@dataclass(frozen=True, slots=True)
class Blame:
    path: list[str]
    version: int
    recorded_at: datetime
    actor: dict[str, Any] | None
    action: str
    reason: str | None


def blame(session: Session, service: str, environment: str) -> list[Blame]:
    """For every key path of the current document (down to each value that is not an object),
    the version that last changed it: when, by whom, how and why."""
    state = get(session, service, environment)
    remaining = {tuple(path) for path in _leaf_paths(state.document)}
    found: dict[tuple[str, ...], Blame] = {}
    for event in read_stream(session, stream_name(service, environment), newest_first=True):
        if not remaining:
            break
        if event.type != CONFIG_CHANGED:
            continue
        entry = HistoryEntry.of(event)
        for path in [p for p in remaining if touches(event.data["changes"], list(p))]:
            found[path] = Blame(
                list(path),
                entry.version,
                entry.recorded_at,
                entry.actor,
                entry.action,
                entry.reason,
            )
            remaining.discard(path)
    return [found[path] for path in sorted(found)]


def _leaf_paths(document: Document) -> list[list[str]]:
    paths: list[list[str]] = []
    stack: list[tuple[Any, list[str]]] = [(document, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict) and (node or not path):
            stack.extend((value, [*path, key]) for key, value in node.items())
        else:
            paths.append(path)
    return paths


@dataclass(frozen=True, slots=True)
class DeclaredSecrets:
    service: str
    paths: list[str]  # dotted, as declared
    patterns: tuple[str, ...]
    plaintext_versions: dict[str, int]


def declared_secrets(session: Session, service: str, patterns: tuple[str, ...]) -> DeclaredSecrets:
    """The key paths declared secret for `service`, and per path how many versions (of every
    environment) hold a value of it in plain text: written before it was declared."""
    declared = secret_paths(session, service) or []
    counts = {dotted(path): 0 for path in declared}
    environments = session.scalars(
        select(ConfigCurrentRow.environment).where(ConfigCurrentRow.service == service)
    ).all()
    for environment in environments:
        for event in read_stream(session, stream_name(service, environment)):
            if event.type != CONFIG_CHANGED:
                continue
            for path in declared:
                if any(_sets_plaintext(change, path) for change in event.data["changes"]):
                    counts[dotted(path)] += 1
    return DeclaredSecrets(service, [dotted(p) for p in declared], patterns, counts)


_SECRET_PATHS = select(ServiceRow.secret_paths).where(ServiceRow.name == bindparam("service"))


def secret_paths(session: Session, service: str) -> list[list[str]] | None:
    """The key paths a service's owner declared secret; None when the service does not exist."""
    row = session.connection().execute(_SECRET_PATHS, {"service": service}).first()
    return None if row is None else _declared(row.secret_paths)


def _declared(stored: str | None) -> list[list[str]]:
    paths: list[list[str]] = loads(stored) if stored else []
    return paths


# Named as `current`'s own columns, so that CurrentConfig.from_row reads the rows. (Also read
# beside the writers' accounts, in one statement: configsync.configs.deferred.)
LOCK_AND_READ_COLUMNS = (
    "o_service AS service, o_environment AS environment, o_version AS version,"
    " o_data AS data, o_deleted AS deleted, o_updated_at AS updated_at,"
    " o_updated_by AS updated_by, o_position AS position,"
    " o_service_exists AS service_exists, o_secret_paths AS secret_paths"
)
_LOCK_AND_READ_CALL = (
    "configsync_lock_and_read_many(:namespace, :streams, :services, :environments)"
)
_LOCK_AND_READ = text(f"SELECT {LOCK_AND_READ_COLUMNS} FROM {_LOCK_AND_READ_CALL}").columns(
    updated_at=UTCDateTime()
)

# What a write computes its event from: the config's current state (None if it never existed)
# and its service's declared secret paths (None if there is no such service).
WriteState = tuple[CurrentConfig | None, list[list[str]] | None]


def lock_and_read(session: Session, configs: list[tuple[str, str]]) -> list[WriteState]:
    """Hold the stream locks of `configs` ((service, environment) pairs) to the end of the
    transaction (configsync.events.lock_stream), then read each one's WriteState, in order.

    On PostgreSQL in one round trip, configsync_lock_and_read_many (migrations 0013 and 0014),
    which takes the locks in a fixed order (two batches sharing streams cannot deadlock) and
    whose read, after every lock is granted, sees every write committed before, as a statement
    of its own would, each config looked up by its key; on SQLite, whose write transaction
    already holds the database, the reads.
    """
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        states: list[WriteState] = []
        for service, environment in configs:
            lock_stream(session, stream_name(service, environment))
            state = current.read(session, service, environment)
            states.append((state, secret_paths(session, service)))
        return states
    return [write_state(row) for row in connection.execute(_LOCK_AND_READ, lock_params(configs))]


def lock_params(configs: list[tuple[str, str]]) -> dict[str, Any]:
    """The parameters of _LOCK_AND_READ_CALL for `configs`."""
    return {
        "namespace": STREAM_LOCK_NAMESPACE,
        "streams": [stream_name(service, environment) for service, environment in configs],
        "services": [service for service, _ in configs],
        "environments": [environment for _, environment in configs],
    }


def write_state(row: Any) -> WriteState:
    """The WriteState of a row of LOCK_AND_READ_COLUMNS."""
    return (
        CurrentConfig.from_row(row) if row.version is not None else None,
        _declared(row.secret_paths) if row.service_exists else None,
    )


def _sets_plaintext(change: Change, path: list[str]) -> bool:
    if change["op"] == "remove":
        return False
    where = change["path"]
    if where[: len(path)] == path:  # at the path or inside it: a plain value there
        return not is_envelope(change["value"])
    if path[: len(where)] == where:  # a parent replaced whole: look inside its value
        found, value = lookup(change["value"], tuple(path[len(where) :]))
        return found and not is_envelope(value)
    return False


def dotted(path: list[str]) -> str:
    return ".".join(part.replace("\\", "\\\\").replace(".", "\\.") for part in path)
