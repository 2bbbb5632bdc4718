"""Group commit: appends from many threads share one transaction and one commit.

Why: an append holds the global append lock until its commit is durable (configsync.events.store
says why), so appends one per transaction go no faster than one commit after another, whatever
the number of writers. Group commit lifts that bound the way databases do for their own log: a
writer that arrives while a commit is in flight queues; when that commit is done, one queued
writer (the leader) takes everything queued, runs it in one transaction, commits once, and hands
every other writer its own outcome. A lone writer commits at once (no timer, no added latency);
under load the batches grow by themselves.

Each item keeps its own outcome: a stale expected version fails that item alone. If the batch's
transaction fails before its commit, every item is run again alone, so that one bad item cannot
fail the writes that happened to share its batch. If the commit itself fails, its outcome is
unknown and every item of the batch gets that error, as a lone writer would.

Items may name a key (`key`): a batch holds at most one item of each key, and the others wait,
in order, for a later batch. The config writes' key is their stream: each is decided against
the state the one before it committed.

A writer that must not block (a request on the event loop) submits with `submit_async`: its
outcome goes to a callback, and a batch it is to lead runs on the group's own leader thread.

One batch is in flight per GroupCommit at a time, on a connection of its own (`for_database`).
Writers may wait here while holding a connection of their own (a request's session, with what it
read before its write), so a shared pool could run out with every connection held by a
waiting writer and none left for the leader. That connection is not pinged before each batch (a
round trip in every batch's path); a batch that finds it dead is run again on a new one, which is
safe because nothing can have been written on a dead connection.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from configsync.db import make_engine, make_session_factory

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")

# What a batch's work gives back: one outcome per item, in order; an exception is that item's
# failure, raised in the thread that submitted it.
Work = Callable[[Session, Sequence[Item]], Sequence[Outcome | Exception]]


class _Slot(Generic[Item, Outcome]):
    """A writer's item, waited for by the thread that submitted it."""

    __slots__ = ("done", "item", "outcome", "woken")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.outcome: Outcome | BaseException | None = None
        self.done = False
        # Set once: when the outcome is in, or when this slot's writer is to lead the next batch.
        self.woken = threading.Event()

    def settle(self, outcome: Outcome | BaseException) -> None:
        self.outcome = outcome
        self.done = True

    def wake(self) -> None:
        """With the outcome in: hand it over; without: lead the next batch."""
        self.woken.set()


class _CallbackSlot(_Slot[Item, Outcome]):
    """A writer's item whose outcome goes to a callback (`submit_async`): no thread waits for
    it, so the batch it is to lead runs on the group's own leader thread."""

    __slots__ = ("group", "on_done")

    def __init__(
        self,
        item: Item,
        on_done: Callable[[Outcome | BaseException], None],
        group: GroupCommit[Item, Outcome],
    ) -> None:
        super().__init__(item)
        self.on_done = on_done
        self.group = group

    def wake(self) -> None:
        if not self.done:
            self.group._leader().submit(self.group._lead, self)
            return
        try:
            self.on_done(self.outcome)  # type: ignore[arg-type]
        except Exception:  # the batch's other writers must still be woken
            log.exception("a group commit's outcome callback failed")


class GroupCommit(Generic[Item, Outcome]):
    """Run `work` for many threads' items in shared transactions; `submit` blocks until durable."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        work: Work[Item, Outcome],
        *,
        max_batch: int = 64,
        key: Callable[[Item], Hashable] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be 1 or more")
        self._sessions = sessions
        self._work = work
        self._max_batch = max_batch
        self._key = key
        self._lock = threading.Lock()
        self._queue: deque[_Slot[Item, Outcome]] = deque()
        self._committing = False
        self._engine: Engine | None = None
        # Runs the batches that writers submitting with `submit_async` are to lead (made at the
        # first such writer).
        self._leader_thread: ThreadPoolExecutor | None = None
        # Read by the benchmark and the tests: transactions run, items submitted.
        self.transactions = 0
        self.items = 0
        self.largest_batch = 0

    @classmethod
    def for_database(
        cls,
        url: str,
        work: Work[Item, Outcome],
        *,
        max_batch: int = 64,
        key: Callable[[Item], Hashable] | None = None,
        lock_timeout: float | None = None,
        idle_in_transaction_timeout: float | None = None,
    ) -> GroupCommit[Item, Outcome]:
        """A group with a connection of its own to the database at `url`; `close` releases it."""
        engine = make_engine(
            url,
            pool_size=1,
            # A second connection for the rare short transaction of its own that a batch's
            # work runs (the installation's first secret makes its fingerprint key so).
            max_overflow=1,
            pool_pre_ping=False,
            lock_timeout=lock_timeout,
            idle_in_transaction_timeout=idle_in_transaction_timeout,
        )
        group = cls(make_session_factory(engine), work, max_batch=max_batch, key=key)
        group._engine = engine
        return group

    def close(self) -> None:
        """Release the connection and the leader thread (a batch under way finishes first). As
        with the engine's dispose, a later submission makes them again."""
        with self._lock:
            leader, self._leader_thread = self._leader_thread, None
        if leader is not None:
            leader.shutdown(wait=False)
        if self._engine is not None:
            self._engine.dispose()

    @property
    def waiting(self) -> int:
        """Items queued for the next batch (not those of the batch being committed)."""
        with self._lock:
            return len(self._queue)

    def submit(self, item: Item) -> Outcome:
        """Run `item` in the next batch; return its outcome once committed, or raise its error."""
        slot: _Slot[Item, Outcome] = _Slot(item)
        lead = self._enter(slot)
        if not lead:
            # Woken once: with the outcome, or to lead the batch of everything queued by now.
            slot.woken.wait()
        if not slot.done:
            self._lead(slot)
        if isinstance(slot.outcome, BaseException):
            raise slot.outcome
        return slot.outcome  # type: ignore[return-value]

    def submit_async(self, item: Item, on_done: Callable[[Outcome | BaseException], None]) -> None:
        """Run `item` in the next batch without waiting: `on_done` gets its outcome (or its
        error) once committed, on the thread that ran the batch. A batch it leads runs on the
        group's leader thread. For callers that must not block (an event loop)."""
        slot = _CallbackSlot(item, on_done, self)
        if self._enter(slot):
            self._leader().submit(self._lead, slot)

    def _enter(self, slot: _Slot[Item, Outcome]) -> bool:
        """Whether `slot`'s writer leads a batch now (none is in flight); else it is queued."""
        with self._lock:
            if self._committing:
                self._queue.append(slot)
                return False
            self._committing = True
            return True

    def _leader(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._leader_thread is None:
                self._leader_thread = ThreadPoolExecutor(1, thread_name_prefix="configsync-group")
            return self._leader_thread

    def _lead(self, own: _Slot[Item, Outcome]) -> None:
        # Only one writer leads at a time; each wakes exactly the writers it has news for (no
        # thundering herd on every commit), then hands the lead to the first one still queued.
        with self._lock:
            if own in self._queue:
                self._queue.remove(own)
            batch = self._take(own)
        try:
            self._commit(batch)
        finally:
            for slot in batch:
                # (A waiting thread that leads reads its own outcome when this returns.)
                if slot is not own or isinstance(own, _CallbackSlot):
                    slot.wake()
            with self._lock:
                following = self._queue[0] if self._queue else None
                if following is None:
                    self._committing = False
            if following is not None:
                following.wake()

    def _take(self, own: _Slot[Item, Outcome]) -> list[_Slot[Item, Outcome]]:
        """The next batch: `own`, then queued items in order, one per key (under `_lock`)."""
        if self._key is None:
            count = min(len(self._queue), self._max_batch - 1)
            return [own] + [self._queue.popleft() for _ in range(count)]
        batch, keys, later = [own], {self._key(own.item)}, deque[_Slot[Item, Outcome]]()
        while self._queue and len(batch) < self._max_batch:
            slot = self._queue.popleft()
            key = self._key(slot.item)
            if key in keys:
                later.append(slot)
            else:
                keys.add(key)
                batch.append(slot)
        later.extend(self._queue)
        self._queue = later
        return batch

    def _commit(self, batch: list[_Slot[Item, Outcome]]) -> None:
        self.items += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        try:
            outcomes = self._run([slot.item for slot in batch])
        except _CommitFailed as failed:
            for slot in batch:
                slot.settle(failed.error)
        except OperationalError as error:
            # A lock wait that timed out, a database that went away: no one item's fault, and
            # running each alone would only make every writer wait out the timeout again.
            for slot in batch:
                slot.settle(error)
        except Exception as error:
            if len(batch) == 1:
                batch[0].settle(error)
            else:
                self._commit_alone(batch)
        except BaseException as error:  # interrupted: nobody may wait forever for an outcome
            for slot in batch:
                if not slot.done:
                    slot.settle(error)
            raise
        else:
            for slot, outcome in zip(batch, outcomes, strict=True):
                slot.settle(outcome)

    def _commit_alone(self, batch: list[_Slot[Item, Outcome]]) -> None:
        for slot in batch:
            try:
                (outcome,) = self._run([slot.item])
            except _CommitFailed as failed:
                slot.settle(failed.error)
            except Exception as error:
                slot.settle(error)
            else:
                slot.settle(outcome)

    def _run(self, items: list[Item]) -> Sequence[Outcome | Exception]:
        for attempt in (1, 2):
            self.transactions += 1
            with self._sessions() as session:
                try:
                    outcomes = self._work(session, items)
                except DBAPIError as error:
                    if error.connection_invalidated and attempt == 1:
                        continue  # the connection had died since its last batch: a new one
                    raise
                if len(outcomes) != len(items):
                    raise RuntimeError(f"{len(items)} items gave {len(outcomes)} outcomes")
                try:
                    session.commit()
                except Exception as error:
                    raise _CommitFailed(error) from error
                return outcomes
        raise AssertionError("unreachable")


class _CommitFailed(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error
