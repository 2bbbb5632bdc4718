"""Reads of current configs, served from pre-serialized bytes cached per process.

The cache is trusted only while the change feed is connected (PostgreSQL); on SQLite every read
goes to the database. An entry is never served to a caller that shows (If-None-Match) it has
seen a newer version than the entry: that read goes to the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from configsync.auth.models import ServiceRow
from configsync.cache import InvalidatingCache
from configsync.configs.receipts import ReadReceipts
from configsync.configs.rendering import render
from configsync.configs.waiters import Waiters
from configsync.domain.documents import Document
from configsync.domain.secrets import mask
from configsync.events import format_instant
from configsync.feed import ConfigMoved
from configsync.http import dumps
from configsync.secrets.vault import Vault
from projections import current

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    service: str
    environment: str
    version: int
    deleted: bool
    owner_id: str | None
    document: Document  # plaintext: secret values opened
    body: bytes  # the JSON answer to GET, ready to send
    stored: Document = field(default_factory=dict)  # secret values sealed
    updated_at: datetime | None = None
    updated_by: dict[str, Any] = field(default_factory=dict)
    renders: dict[str, bytes] = field(default_factory=dict, compare=False)
    masked_renders: dict[str, bytes] = field(default_factory=dict, compare=False)

    @property
    def etag(self) -> str:
        return f'"{self.version}"'

    def rendered(self, fmt: str, *, masked: bool = False) -> bytes:
        if masked:
            return self._masked(fmt)
        if fmt == "json":
            return self.body
        out = self.renders.get(fmt)
        if out is None:
            out = self.renders[fmt] = render(self.document, fmt)
        return out

    def _masked(self, fmt: str) -> bytes:
        """The answer for a reader who may not see secrets (an auditor): made on first use."""
        out = self.masked_renders.get(fmt)
        if out is None:
            document = mask(self.stored)
            if fmt == "json":
                out = dumps(response_body(self, {"data": document}))
            else:
                out = render(document, fmt)
            self.masked_renders[fmt] = out
        return out


@dataclass(frozen=True, slots=True)
class Lookup:
    """What the database says of a config: does its service exist, who owns it, its entry."""

    exists: bool
    owner_id: str | None
    entry: ConfigEntry | None

    @classmethod
    def of(cls, entry: ConfigEntry) -> Lookup:
        return cls(True, entry.owner_id, entry)


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
    def __init__(
        self, session_factory: sessionmaker[Session], vault: Vault, receipts: ReadReceipts
    ) -> None:
        self._sessions = session_factory
        self.vault = vault
        self.receipts = receipts
        self.cache: InvalidatingCache[Key, ConfigEntry] = InvalidatingCache()
        self.waiters = Waiters()

    def session(self) -> Session:
        """A session of the reader's own, for reads made outside a request's unit of work."""
        return self._sessions()

    def cached(self, service: str, environment: str) -> ConfigEntry | None:
        return self.cache.get((service, environment))

    def load(self, service: str, environment: str) -> Lookup:
        """The config read from the database (and kept in the cache)."""
        generation = self.cache.generation
        with self._sessions() as session:
            owner = session.get(ServiceRow, service)
            state = current.read(session, service, environment) if owner is not None else None
            if owner is None:
                return Lookup(False, None, None)
            if state is None:
                return Lookup(True, owner.owner_id, None)
            document = self.vault.open(session, state.document)
        body = response_body(state, {"data": document})
        entry = ConfigEntry(
            service=service,
            environment=environment,
            version=state.version,
            deleted=state.deleted,
            owner_id=owner.owner_id,
            document=document,
            body=dumps(body),
            stored=state.document,
            updated_at=state.updated_at,
            updated_by=state.updated_by,
        )
        self.cache.fill((service, environment), entry, generation)
        return Lookup(True, owner.owner_id, entry)

    def changed(self, message: ConfigMoved) -> None:
        """A config moved (this process's write, or another's through the change feed)."""
        key = (message.service, message.environment)
        self.cache.invalidate(key)
        self.waiters.wake(key)
