"""Long polls: requests waiting for a config to move past the version they have.

A waiter is woken when this process learns the config changed: from its own commits at once,
from other processes through the change feed. It then reads the database again; it also does so
every few seconds in case a message was missed (and on SQLite, which has no feed, that re-read
is how a change is seen).
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict

Key = tuple[str, str]


class Waiters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[Key, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = (
            defaultdict(set)
        )

    async def wait(self, key: Key, timeout: float) -> bool:
        """Wait until `wake(key)` or `timeout` seconds; True if woken."""
        event = asyncio.Event()
        entry = (asyncio.get_running_loop(), event)
        with self._lock:
            self._waiting[key].add(entry)
        try:
            await asyncio.wait_for(event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._waiting[key].discard(entry)
                if not self._waiting[key]:
                    del self._waiting[key]

    def wake(self, key: Key) -> None:
        """Thread-safe: called from request threads and the change-feed thread."""
        with self._lock:
            entries = list(self._waiting.get(key, ()))
        for loop, event in entries:
            loop.call_soon_threadsafe(event.set)
