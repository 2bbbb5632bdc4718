"""A per-process cache that can be trusted only while the change feed says it can."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class InvalidatingCache(Generic[K, V]):
    """Entries filled from the database and dropped when the change feed says they changed.

    A fill that read the database before an invalidation and arrives after it would put stale
    data back: every invalidation moves the generation on, and a fill whose read began under
    an older generation is discarded.
    """

    def __init__(self, *, enabled: bool = False, max_entries: int = 50_000) -> None:
        self._entries: dict[K, V] = {}
        self._lock = threading.Lock()
        self._max_entries = max_entries
        self.generation = 0
        self.enabled = enabled

    def get(self, key: K) -> V | None:
        return self._entries.get(key) if self.enabled else None

    def fill(self, key: K, value: V, generation: int) -> None:
        with self._lock:
            if not self.enabled or generation != self.generation:
                return
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
            self._entries[key] = value

    def invalidate(self, key: K) -> None:
        with self._lock:
            self.generation += 1
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()

    def switch(self, enabled: bool) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()
            self.enabled = enabled
