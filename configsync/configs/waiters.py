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
import gc
import threading
from collections import defaultdict
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from configsync.metrics import WAITERS

Key = tuple[str, str]


class Watch:
    """One request's registration for a key; use as a context manager.

    Lives on its event loop: `_set` runs there (Waiters hands a wake over in one callback for
    all the waiters it wakes), and `wait` costs one future and one timer, no task.
    """

    __slots__ = ("_found", "_future", "_key", "_loop", "_waiters", "_woken")

    def __init__(self, waiters: Waiters, key: Key) -> None:
        self._waiters = waiters
        self._key = key
        self._loop = asyncio.get_running_loop()
        self._woken = False
        self._found: Any = None
        self._future: asyncio.Future[None] | None = None

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

    def _set(self, found: Any = None) -> None:
        self._woken = True
        self._found = found
        _resolve(self._future)

    def take_found(self) -> Any:
        """What the wake brought (the config as read once for all the key's waiters), or None:
        then the waiter reads it itself."""
        found, self._found = self._found, None
        return found

    async def wait(self, timeout: float, until: asyncio.Future[None] | None = None) -> bool:
        """Wait until woken (since the last wait), `until` is done, or `timeout` seconds; True
        if woken."""
        if not self._woken:
            future = self._future = self._loop.create_future()
            timer = self._loop.call_later(timeout, _resolve, future)
            if until is not None:
                until.add_done_callback(future_resolver := lambda _: _resolve(future))
            try:
                await future
            finally:
                timer.cancel()
                self._future = None
                if until is not None:
                    until.remove_done_callback(future_resolver)
        woken, self._woken = self._woken, False
        return woken


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


Fetch = Callable[[], Awaitable[Any]]
_fetching: set[asyncio.Future[Any]] = set()  # the loop keeps only weak references to tasks


def _set_many(watches: list[Watch], found: Any = None) -> None:
    """Wake `watches`, with the cyclic garbage collector paused until their answers are sent:
    their requests step to their answers in the loop's next turn, and the last few dozen go out
    at that turn's end (configsync.serving), before the callback that resumes it.

    Each long poll holds a few dozen tracked objects (its coroutines, frames, scope, protocol);
    answering 10,000 of them allocates enough to set off full collections that walk all the
    others still waiting: 40% of the server's CPU in the seconds around such a wake, a single
    pause of 383 ms in the middle of it (perf and gc.callbacks, 2026-12-03). Their objects are
    freed by reference counting as they answer; nothing cyclic is lost, only looked for once
    the wake is over. The collector is the process's: the other threads' cyclic garbage waits
    as long (half a second for 10,000 answers on this machine).
    """
    if not watches:
        return
    pause = gc.isenabled()
    if pause:
        gc.disable()
    for watch in watches:
        watch._set(found)
    if pause:  # queued at the end of the turn the requests' steps (queued just now) run in
        loop = watches[0]._loop
        loop.call_soon(loop.call_soon, gc.enable)


def _set_all(watches: list[Watch], fetch: Fetch | None = None) -> None:
    """On the watches' loop: wake them, or first fetch what they will all read (once), then wake
    them with it: 10,000 waiters then do not each await one shared read."""
    if fetch is None:
        _set_many(watches)
        return
    fetched = asyncio.ensure_future(fetch())
    _fetching.add(fetched)

    def done(future: asyncio.Future[Any]) -> None:
        _fetching.discard(future)
        failed = future.cancelled() or future.exception() is not None
        _set_many(watches, None if failed else future.result())

    fetched.add_done_callback(done)


def _wake(watches: list[Watch], fetch: Fetch | None = None) -> None:
    """One callback per event loop for all of `watches` (10,000 thread-safe calls would each
    take the GIL from the loop and write to its wake-up pipe)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Watch]] = {}
    for watch in watches:
        by_loop.setdefault(watch._loop, []).append(watch)
    for loop, group in by_loop.items():
        loop.call_soon_threadsafe(_set_all, group, fetch)


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

    def wake(self, key: Key, fetch: Fetch | None = None) -> None:
        """Thread-safe: called from request threads and the change-feed thread. With `fetch`,
        each loop runs it once and hands its result to the waiters it wakes (`take_found`)."""
        with self._lock:
            watches = list(self._waiting.get(key, ()))
        if watches:
            _wake(watches, fetch)

    def wake_all(self) -> None:
        """Every waiter, whatever its key (the change feed connected or dropped)."""
        with self._lock:
            watches = [watch for group in self._waiting.values() for watch in group]
        _wake(watches)
