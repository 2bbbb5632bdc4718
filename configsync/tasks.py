"""Celery: the worker that applies the asynchronous projections, and how the API asks it to.

Nothing is lost whatever happens to the messages: the one task means "apply every event after
the checkpoint", so a lost task is made up by the next one, by the worker's start-up catch-up
or by the periodic one (beat), and a duplicated or reordered task finds nothing left to do.
The settings below make sure a task that was running when its worker died is run again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any
from weakref import WeakKeyDictionary

from celery import Celery, signals
from sqlalchemy.orm import Session, sessionmaker

from configsync.audit.log import CheckpointClock, LogSigner, NoSigningKey, publish, sign_checkpoint
from configsync.db import make_engine, make_session_factory, unit_of_work
from configsync.events import StoredEvent
from configsync.settings import Settings, get_settings
from projections.audit import AuditFile
from projections.registry import catch_up_all

log = logging.getLogger(__name__)

CATCH_UP = "configsync.catch_up"
QUEUE = "configsync"

celery_app = Celery("configsync")


def configure(settings: Settings) -> Celery:
    celery_app.conf.update(
        broker_url=settings.redis_url or "memory://",
        task_default_queue=QUEUE,
        task_ignore_result=True,
        # A task is acknowledged only when it has finished, and one whose worker process died
        # is given back to the queue: a SIGKILL mid-batch loses nothing.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": 3600,
            "socket_timeout": 2,
            "socket_connect_timeout": 1,
        },
        beat_schedule={
            "catch-up": {"task": CATCH_UP, "schedule": settings.catch_up_interval_seconds}
        },
        worker_hijack_root_logger=False,
    )
    return celery_app


class _Runtime:
    """One engine per process, made lazily: a forked worker child must not share its parent's."""

    def __init__(self) -> None:
        self._factory: sessionmaker[Session] | None = None
        self._engine: Any = None

    def factory(self) -> sessionmaker[Session]:
        if self._factory is None:
            self._engine = make_engine(get_settings().database_url)
            self._factory = make_session_factory(self._engine)
        return self._factory

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose(close=False)
        self._engine = None
        self._factory = None


runtime = _Runtime()


def run_projections(factory: sessionmaker[Session], settings: Settings) -> dict[str, int]:
    """Catch every asynchronous projection up (projections.registry), then the audit file."""
    delay = settings.debug_batch_delay

    def pause(_events: Sequence[StoredEvent]) -> None:
        if delay:
            time.sleep(delay)

    applied = catch_up_all(factory, batch_size=settings.projection_batch_size, on_batch=pause)
    with factory() as session:
        written = AuditFile(settings.audit_log).catch_up(session)
    return {**applied, "audit_file": written, "checkpoint": sign_due_checkpoint(factory, settings)}


# Per session factory (one per process and database): when a checkpoint can next be due.
_CLOCKS: WeakKeyDictionary[sessionmaker[Session], CheckpointClock] = WeakKeyDictionary()


def sign_due_checkpoint(factory: sessionmaker[Session], settings: Settings) -> int:
    """Sign the tree if it grew and the interval has passed; publish it outside the database.
    Returns the signed tree size (0: none was due, or no key is configured)."""
    clock = _CLOCKS.setdefault(factory, CheckpointClock())
    if clock.waiting():
        return 0
    try:
        signer = LogSigner.from_settings(settings)
    except NoSigningKey as exc:
        log.error("no checkpoint signed: %s", exc.detail)
        return 0
    interval = timedelta(seconds=settings.checkpoint_interval_seconds)
    with unit_of_work(factory) as session:
        signed = sign_checkpoint(session, signer, min_interval=interval, clock=clock)
    if signed is None:
        return 0
    clock.not_before = signed.signed_at + interval  # committed: the next is due from here
    publish(signed, settings)
    return signed.tree_size


@celery_app.task(name=CATCH_UP)
def catch_up_task() -> dict[str, int]:
    return run_projections(runtime.factory(), get_settings())


@signals.worker_process_init.connect
def _fresh_engine_after_fork(**_: Any) -> None:
    runtime.dispose()


@signals.worker_ready.connect
def _catch_up_on_start(**_: Any) -> None:
    # Whatever was committed while no worker ran (or while the broker was down) is applied now.
    catch_up_task.apply_async()


# The shortest time between two projection tasks sent while writes keep coming: a write's audit
# row is then at most this much later than it would be (a write after a quiet spell is sent for
# at once). A task costs the worker about as much CPU as thirty of the events it applies (its
# claims, checkpoint moves and commits), and a send costs the API ~0.75 ms: at 0.02 s, the API's
# ~40 tasks a second under write load spent more of the machine on tasks than on events. At
# 0.1 s, the same PUT load (16 connections, back to back) served 20-40% more writes a second,
# and the worker's CPU per write halved. At 0.25 s (2026-12-02, three alternated pairs against
# 0.1 s) the worker's CPU per write fell again, from 0.96-1.14 ms to 0.51-0.61 ms, the API's
# from 2.78-3.07 to 2.47-2.78 ms, and 9-26% more writes a second were served; 0.5 s and 1 s
# saved only another 0.05-0.2 ms of the worker's per write, for two to four times the lag.
SEND_INTERVAL = 0.25


class Dispatcher:
    """Called after each commit that appended an event: get the asynchronous projections run.

    Embedded mode (no REDIS_URL) runs them in-process right away. Otherwise a task is sent from
    a background thread, so a slow or dead broker never holds up the request; sends are
    coalesced (one task catches everything up), and a failed send is only logged: the worker's
    periodic and start-up catch-ups apply the event anyway.
    """

    def __init__(self, settings: Settings, factory: sessionmaker[Session]) -> None:
        self._settings = settings
        self._factory = factory
        self._lock = threading.Lock()
        self._dirty = False  # a write committed since the last send began
        self._sending = False  # a sender is running (it loops while writes are dirty)
        self._executor = (
            None
            if settings.embedded
            else ThreadPoolExecutor(1, thread_name_prefix="configsync-publish")
        )
        if not settings.embedded:
            configure(settings)

    def __call__(self, _event: StoredEvent) -> None:
        if self._executor is None:
            try:
                run_projections(self._factory, self._settings)
            except Exception:
                log.exception("in-process projections failed; they catch up on the next write")
            return
        with self._lock:
            self._dirty = True
            if self._sending:
                return  # the sender in flight sends for this write too
            self._sending = True
        self._executor.submit(self._send)

    def _send(self) -> None:
        """One task for every write since the last send: the worker's catch-up applies all of
        them. While writes keep coming, at most one send every SEND_INTERVAL seconds (a send
        costs the API more CPU than the write it is for); a write during a send or the pause
        after it is sent for by the next round, never dropped."""
        while True:
            with self._lock:
                if not self._dirty:
                    self._sending = False
                    return
                self._dirty = False
            try:
                catch_up_task.apply_async(retry=False)
            except Exception as exc:
                log.warning(
                    "could not send the projection task (the worker will catch up): %s", exc
                )
            time.sleep(SEND_INTERVAL)

    def close(self) -> None:
        # A send still trying a dead broker (redis-py retries for about 6 s) is not waited for:
        # dropping it loses nothing, the worker's periodic catch-up applies the events anyway.
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
