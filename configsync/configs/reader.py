"""Reads of current configs, served from pre-serialized bytes cached per process.

The cache is trusted only while the change feed is connected (PostgreSQL); on SQLite every read
goes to the database. An entry is never served to a caller that shows (If-None-Match) it has
seen a newer version than the entry: that read goes to the database.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from configsync.auth.models import ServiceRow
from configsync.cache import InvalidatingCache
from configsync.configs.receipts import ReadReceipts
from configsync.configs.rendering import render
from configsync.configs.waiters import Waiters
from configsync.domain.documents import Document
from configsync.domain.secrets import envelopes, mask
from configsync.events import format_instant
from configsync.feed import ConfigMoved
from configsync.http import dumps, kept, loads
from configsync.secrets.vault import Vault
from projections import current
from projections.current import ConfigCurrentRow

Key = tuple[str, str]


# What an entry costs beyond its bytes (the object, its strings, the cache's key and slot),
# rounded up from tracemalloc on 4 KB documents (tests/test_cache.py; bench/read_many.py
# reports the resident memory).
ENTRY_OVERHEAD = 2_500


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    """A current config as the cache keeps it: the JSON answer ready to send, and the stored
    form (secret values sealed) only when it differs; documents are parsed from those bytes
    when another format is first asked for, so an entry costs about its answer's size."""

    service: str
    environment: str
    version: int
    deleted: bool
    owner_id: str | None
    body: bytes  # the JSON answer to GET, ready to send (secret values opened)
    stored_json: bytes | None = None  # the document as stored, when it holds sealed secrets
    updated_at: datetime | None = None
    updated_by: dict[str, Any] = field(default_factory=dict)
    renders: dict[str, bytes] = field(default_factory=dict, compare=False)
    masked_renders: dict[str, bytes] = field(default_factory=dict, compare=False)

    @property
    def etag(self) -> str:
        return f'"{self.version}"'

    @property
    def document(self) -> Document:
        """Plaintext: secret values opened."""
        found: Document = loads(self.body)["data"]
        return found

    @property
    def stored(self) -> Document:
        """As stored: secret values sealed."""
        return loads(self.stored_json) if self.stored_json is not None else self.document

    @property
    def nbytes(self) -> int:
        """About what the entry holds in memory (for the cache's bound)."""
        return len(self.body) + len(self.stored_json or b"") + ENTRY_OVERHEAD

    def rendered(self, fmt: str, *, masked: bool = False) -> bytes:
        if masked:
            return self._masked(fmt)
        if fmt == "json":
            return self.body
        out = self.renders.get(fmt)
        if out is None:
            out = self.renders[fmt] = kept(render(self.document, fmt))
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
            self.masked_renders[fmt] = out = kept(out)
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
        self,
        session_factory: sessionmaker[Session],
        vault: Vault,
        receipts: ReadReceipts,
        max_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self._sessions = session_factory
        self.vault = vault
        self.receipts = receipts
        self.cache: InvalidatingCache[Key, ConfigEntry] = InvalidatingCache(
            max_size=max_bytes, size=lambda entry: entry.nbytes
        )
        self.waiters = Waiters()
        # Loads in flight for woken long polls, by key: (the cache generation they began
        # under, the load). Touched on the event loop only.
        self._refreshing: dict[Key, tuple[int, asyncio.Future[Lookup]]] = {}
        # The latest version this process heard each config moved to.
        self._heard: dict[Key, int] = {}
        self._heard_lock = threading.Lock()

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
            entry = self._entry(session, state, owner.owner_id)
        self.cache.fill((service, environment), entry, generation)
        return Lookup(True, owner.owner_id, entry)

    def _entry(
        self, session: Session, state: current.CurrentConfig, owner_id: str | None
    ) -> ConfigEntry:
        document = self.vault.open(session, state.document)
        body = response_body(state, {"data": document})
        sealed = any(True for _ in envelopes(state.document))
        return ConfigEntry(
            service=state.service,
            environment=state.environment,
            version=state.version,
            deleted=state.deleted,
            owner_id=owner_id,
            body=kept(dumps(body)),
            stored_json=kept(dumps(state.document)) if sealed else None,
            updated_at=state.updated_at,
            updated_by=state.updated_by,
        )

    def warm(self, batch: int = 500) -> int:
        """Fill the cache with the current configs, a batch at a time, until its bound: a
        process that starts (or whose change feed reconnects) then serves from memory at once
        instead of reading each config on its first request. A batch read while a change came
        is not kept (the cache's generation moved); returns how many entries were kept."""
        kept_count = 0
        after: tuple[str, str] = ("", "")
        while self.cache.enabled and self.cache.size < self.cache.max_size:
            generation = self.cache.generation
            with self._sessions() as session:
                rows = session.execute(
                    select(ConfigCurrentRow, ServiceRow.owner_id)
                    .join(ServiceRow, ServiceRow.name == ConfigCurrentRow.service)
                    .where(tuple_(ConfigCurrentRow.service, ConfigCurrentRow.environment) > after)
                    .where(ConfigCurrentRow.deleted.is_(False))
                    .order_by(ConfigCurrentRow.service, ConfigCurrentRow.environment)
                    .limit(batch)
                ).all()
                entries = [
                    self._entry(session, current.CurrentConfig.from_row(row), owner_id)
                    for row, owner_id in rows
                ]
            if not entries:
                break
            after = (entries[-1].service, entries[-1].environment)
            for entry in entries:
                if self.cache.get((entry.service, entry.environment)) is None:
                    self.cache.fill((entry.service, entry.environment), entry, generation)
                    kept_count += 1
        return kept_count

    async def refresh(self, service: str, environment: str) -> Lookup:
        """The config from the database, for long polls woken by a change: one read for all the
        waiters of a key in this process. A waiter joins a read already under way only if that
        read began after the last change this process heard of (the generation), so nobody is
        handed what was current before the change that woke it."""
        key = (service, environment)
        generation = self.cache.generation
        found = self._refreshing.get(key)
        if found is None or found[0] < generation:
            future = asyncio.ensure_future(run_in_threadpool(self.load, service, environment))
            self._refreshing[key] = (generation, future)

            def done(_: asyncio.Future[Lookup], key: Key = key) -> None:
                if self._refreshing.get(key, (0, None))[1] is future:
                    del self._refreshing[key]

            future.add_done_callback(done)
            found = (generation, future)
        return await asyncio.shield(found[1])

    def changed(self, message: ConfigMoved) -> None:
        """A config moved (this process's write, or another's through the change feed). The
        writing process hears of its own write twice (at commit, then from the feed): the
        second time changes nothing, and does not wake its long polls for a second read."""
        key = (message.service, message.environment)
        with self._heard_lock:
            if self._heard.get(key, 0) >= message.version:
                return
            self._heard[key] = message.version
        self.cache.invalidate(key)
        self.waiters.wake(key, partial(self.refresh, message.service, message.environment))
