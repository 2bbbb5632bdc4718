"""A per-process cache that can be trusted only while the change feed says it can."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


def _one(_value: object) -> int:
    return 1


class InvalidatingCache(Generic[K, V]):
    """Entries filled from the database and dropped when the change feed says they changed.

    A fill that read the database before an invalidation and arrives after it would put stale
    data back: every invalidation moves the generation on, and a fill whose read began under
    an older generation is discarded.

    Bounded: each entry has a size (`size(value)`: bytes, or 1 to count entries) and past
    `max_size` the least recently used entries are evicted, one at a time, never all at once.
    """

    def __init__(
        self,
        *,
        enabled: bool = False,
        max_size: int = 50_000,
        size: Callable[[V], int] = _one,
    ) -> None:
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_size = max_size
        self._size = size
        self.size = 0  # the sizes of the entries held, summed
        self.evictions = 0
        self.generation = 0
        self.enabled = enabled

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        if not self.enabled:
            return None
        found = self._entries.get(key)
        if found is None:
            return None
        # Most recently used: one C call, atomic without the lock; the entry may just have gone.
        # (try/except, not contextlib.suppress: this is the hot path, and a with costs more.)
        try:  # noqa: SIM105
            self._entries.move_to_end(key)
        except KeyError:
            pass
        return found[0]

    def fill(self, key: K, value: V, generation: int) -> None:
        size = self._size(value)
        with self._lock:
            if not self.enabled or generation != self.generation:
                return
            self._drop(key)
            self._entries[key] = (value, size)
            self.size += size
            while self.size > self.max_size and len(self._entries) > 1:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.size -= dropped
                self.evictions += 1

    def _drop(self, key: K) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.size -= old[1]

    def invalidate(self, key: K) -> None:
        with self._lock:
            self.generation += 1
            self._drop(key)

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()
            self.size = 0

    def switch(self, enabled: bool) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()
            self.size = 0
            self.enabled = enabled
