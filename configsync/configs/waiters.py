"""Long polls: requests waiting for a config to move past the version they have.

A waiter is woken when this process learns the config changed: from its own commits at once
(the write path's listeners), from other processes through the change feed. The waiters of a
key then share one read of the database (ConfigReader.refresh). While the feed is connected an
idle waiter costs nothing; without it (SQLite, or the feed down) a waiter also looks every few
seconds, for writes of other processes. A feed that connects or drops wakes every waiter.

A waiter registers *before* it reads the version it compares with: a write that lands between
that read and the wait then still wakes it, instead of being noticed only at the next re-check.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from types import TracebackType
from typing import Any

from configsync.metrics import WAITERS

Key = tuple[str, str]


class Watch:
    """One request's registration for a key; use as a context manager."""

    __slots__ = ("_event", "_key", "_loop", "_waiters")

    def __init__(self, waiters: Waiters, key: Key) -> None:
        self._waiters = waiters
        self._key = key
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def __enter__(self) -> Watch:
        self._waiters._add(self._key, self)
        WAITERS.inc()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self._waiters._discard(self._key, self)
        WAITERS.dec()

    def wake(self) -> None:
        self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float, until: asyncio.Future[None] | None = None) -> bool:
        """Wait until woken (since the last wait), `until` is done, or `timeout` seconds; True
        if woken."""
        woken = asyncio.ensure_future(self._event.wait())
        try:
            pending: set[asyncio.Future[Any]] = {woken}
            if until is not None:
                pending.add(until)
            await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            return woken.done()
        finally:
            woken.cancel()
            self._event.clear()


class Waiters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[Key, set[Watch]] = defaultdict(set)

    def watch(self, key: Key) -> Watch:
        """A registration for `key`, made on the running event loop."""
        return Watch(self, key)

    def _add(self, key: Key, watch: Watch) -> None:
        with self._lock:
            self._waiting[key].add(watch)

    def _discard(self, key: Key, watch: Watch) -> None:
        with self._lock:
            self._waiting[key].discard(watch)
            if not self._waiting[key]:
                del self._waiting[key]

    def wake(self, key: Key) -> None:
        """Thread-safe: called from request threads and the change-feed thread."""
        with self._lock:
            watches = list(self._waiting.get(key, ()))
        for watch in watches:
            watch.wake()

    def wake_all(self) -> None:
        """Every waiter, whatever its key (the change feed connected or dropped)."""
        with self._lock:
            watches = [watch for group in self._waiting.values() for watch in group]
        for watch in watches:
            watch.wake()
