"""Reads of current configs, served from pre-serialized bytes cached per process.

The cache is trusted only while the change feed is connected (PostgreSQL); on SQLite every read
goes to the database. An entry is never served to a caller that shows (If-None-Match) it has
seen a newer version than the entry: that read goes to the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from configsync.cache import InvalidatingCache
from configsync.configs.documents import Document
from configsync.configs.models import ServiceRow
from configsync.configs.rendering import dumps, render
from configsync.configs.waiters import Waiters
from configsync.events import format_instant
from projections import current

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    service: str
    environment: str
    version: int
    deleted: bool
    owner_id: str | None
    document: Document
    body: bytes  # the JSON answer to GET, ready to send
    renders: dict[str, bytes] = field(default_factory=dict, compare=False)

    @property
    def etag(self) -> str:
        return f'"{self.version}"'

    def rendered(self, fmt: str) -> bytes:
        if fmt == "json":
            return self.body
        out = self.renders.get(fmt)
        if out is None:
            out = self.renders[fmt] = render(self.document, fmt)
        return out


def response_body(
    state: current.CurrentConfig | Any, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    body = {
        "service": state.service,
        "environment": state.environment,
        "version": state.version,
        "data": state.document,
        "updated_at": format_instant(state.updated_at),
        "updated_by": state.updated_by,
    }
    body.update(extra or {})
    return body


class ConfigReader:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._sessions = session_factory
        self.cache: InvalidatingCache[Key, ConfigEntry] = InvalidatingCache()
        self.waiters = Waiters()

    def cached(self, service: str, environment: str) -> ConfigEntry | None:
        return self.cache.get((service, environment))

    def load(self, service: str, environment: str) -> tuple[bool, ConfigEntry | None]:
        """(does the service exist, its config entry or None) read from the database."""
        generation = self.cache.generation
        with self._sessions() as session:
            owner = session.get(ServiceRow, service)
            state = current.read(session, service, environment) if owner is not None else None
        if owner is None:
            return False, None
        if state is None:
            return True, None
        entry = ConfigEntry(
            service=service,
            environment=environment,
            version=state.version,
            deleted=state.deleted,
            owner_id=owner.owner_id,
            document=state.document,
            body=dumps(response_body(state)),
        )
        self.cache.fill((service, environment), entry, generation)
        return True, entry

    def changed(self, payload: str) -> None:
        """Change-feed message `config:{service}/{environment}:{version}`."""
        kind, _, rest = payload.partition(":")
        if kind != "config":
            return
        stream, _, _ = rest.rpartition(":")
        service, _, environment = stream.partition("/")
        self.cache.invalidate((service, environment))
        self.waiters.wake((service, environment))
