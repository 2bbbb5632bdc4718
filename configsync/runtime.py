"""What a running API process holds, made once and wired explicitly: the engine and sessions,
the caches (callers, configs), the change feed that keeps them coherent, the group commit and
the write path's listeners (task dispatch, this process's cache and long polls)."""

from __future__ import annotations

import gc
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from configsync.auth.authenticator import Authenticator
from configsync.auth.throttle import LoginThrottle
from configsync.auth.usage import KeyUsage
from configsync.configs.commands import PendingWrite, WritePath, WriteResult
from configsync.configs.deferred import authorize_and_record
from configsync.configs.reader import ConfigReader
from configsync.configs.receipts import ReadReceipts
from configsync.db import make_engine, make_session_factory
from configsync.domain.events import CONFIG_CHANGED, action_of, split_stream
from configsync.events import StoredEvent
from configsync.events.group import GroupCommit
from configsync.feed import ChangeFeed, ConfigMoved, KeyRevoked, KeysDestroyed, Message
from configsync.logs import AccessLog
from configsync.metrics import WRITES
from configsync.secrets.crypto import MasterKeys
from configsync.secrets.vault import Vault
from configsync.settings import Settings
from configsync.tasks import Dispatcher

log = logging.getLogger(__name__)

# Threads for configsync.configs.fastwrite's writes: as many as Starlette lets its own thread
# pool run at once (anyio's default limiter), which these writes no longer share.
WRITE_THREADS = 40


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    # What configsync.configs.fastwrite's writes read before handing their write to the group
    # commit (who the caller is, who owns the service): with a group, sessions of an engine of
    # their own whose statements each commit alone, without BEGIN and COMMIT round trips.
    write_sessions: sessionmaker[Session]
    # The threads those writes run on (each waits there for its group's commit). Not shut down
    # by `stop`: a write under way finishes on its thread, which the interpreter joins at exit;
    # idle threads end with the executor.
    write_threads: ThreadPoolExecutor
    authenticator: Authenticator
    login_throttle: LoginThrottle
    reader: ConfigReader
    dispatcher: Dispatcher
    group: GroupCommit[PendingWrite, WriteResult] | None
    feed: ChangeFeed | None
    write_path: WritePath
    vault: Vault
    access_log: AccessLog | None = None

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        postgres = not settings.is_sqlite
        engine = make_engine(
            settings.database_url,
            lock_timeout=settings.lock_timeout_seconds,
            idle_in_transaction_timeout=settings.idle_in_transaction_timeout_seconds,
        )
        session_factory = make_session_factory(engine)
        vault = Vault(MasterKeys.parse(settings.master_key_text()), settings.secret_pattern_list())
        reader = ConfigReader(
            session_factory,
            vault,
            ReadReceipts(session_factory, settings.key_usage_flush_seconds),
            max_bytes=settings.cache_max_bytes,
        )
        dispatcher = Dispatcher(settings, session_factory)
        # Group commit on PostgreSQL (configsync.events.group). Not on SQLite: there a request's
        # transaction holds the database's one write lock, which the group's transaction needs.
        group: GroupCommit[PendingWrite, WriteResult] | None = None
        if postgres and settings.group_commit:
            group = GroupCommit.for_database(
                settings.database_url,
                authorize_and_record,
                key=lambda write: write.stream,
                lock_timeout=settings.lock_timeout_seconds,
                idle_in_transaction_timeout=settings.idle_in_transaction_timeout_seconds,
            )

        def committed(event: StoredEvent) -> None:
            if event.type != CONFIG_CHANGED:
                return
            WRITES.labels(action_of(event.data, event.version)).inc()
            service, environment = split_stream(event.stream)
            reader.changed(ConfigMoved(service, environment, event.version))

        write_sessions = session_factory
        if group is not None:
            write_sessions = make_session_factory(
                make_engine(
                    settings.database_url,
                    isolation_level="AUTOCOMMIT",
                    lock_timeout=settings.lock_timeout_seconds,
                )
            )

        runtime = cls(
            settings=settings,
            engine=engine,
            session_factory=session_factory,
            write_sessions=write_sessions,
            write_threads=ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="configsync-write"),
            authenticator=Authenticator(
                settings, KeyUsage(session_factory, settings.key_usage_flush_seconds)
            ),
            login_throttle=LoginThrottle(settings),
            reader=reader,
            dispatcher=dispatcher,
            group=group,
            feed=None,
            write_path=WritePath(group=group, listeners=(committed, dispatcher)),
            vault=vault,
            access_log=AccessLog(fmt=settings.log_format) if settings.request_log else None,
        )
        if postgres:
            runtime.feed = ChangeFeed(
                settings.database_url,
                on_message=runtime.changed,
                on_connected=lambda: runtime.trust_caches(True),
                on_disconnected=lambda: runtime.trust_caches(False),
            )
        return runtime

    def changed(self, message: Message) -> None:
        """A change-feed message from any process."""
        if isinstance(message, ConfigMoved):
            self.reader.changed(message)
        elif isinstance(message, KeyRevoked):
            self.authenticator.forget(message.key_hash)
        elif isinstance(message, KeysDestroyed):
            self.vault.forget(message.key_ids)

    def trust_caches(self, enabled: bool) -> None:
        """Caches are used only while the change feed can tell them what changed. Long polls
        are woken either way: after a reconnect a change may have gone unheard, and without
        the feed they must go back to looking every few seconds."""
        self.reader.cache.switch(enabled)
        self.authenticator.keys.switch(enabled)
        self.reader.waiters.wake_all()
        if enabled and self.settings.cache_warm:
            threading.Thread(target=self._warm, name="configsync-cache-warm", daemon=True).start()

    def _warm(self) -> None:
        began = time.monotonic()
        try:
            count = self.reader.warm()
        except Exception as exc:  # a cold cache fills itself on demand: say so, go on
            log.warning("could not warm the config cache (%s); it fills as configs are read", exc)
            return
        log.info("config cache warmed: %d configs in %.1f s", count, time.monotonic() - began)

    def start(self) -> None:
        if self.feed is not None:
            self.feed.start()
        if self.authenticator.usage is not None:
            self.authenticator.usage.start()
        self.reader.receipts.start()
        if self.access_log is not None:
            self.access_log.start()
        freeze_startup_objects()

    def stop(self) -> None:
        if self.feed is not None:
            self.feed.stop()
        if self.authenticator.usage is not None:
            self.authenticator.usage.stop()
        self.reader.receipts.stop()
        if self.access_log is not None:
            self.access_log.stop()
        self.dispatcher.close()
        self.engine.dispose()
        if self.write_sessions is not self.session_factory:
            self.write_sessions.kw["bind"].dispose()
        if self.group is not None:
            self.group.close()


_frozen = threading.Event()


def freeze_startup_objects() -> None:
    """Take what the process holds once started (modules, classes, the app, its engines and
    caches' scaffolding: about 180,000 objects) out of the cyclic collector's sight, once per
    process. Without it every full collection walked them all: under PUT load each API process
    stopped for 106-134 ms about every 10 s (gc.callbacks, 2026-12-02), every request it held
    waiting, which is a p99 of its own; after it, none in the same load. What is created later
    is collected as before; what is frozen is still freed when nothing refers to it."""
    if _frozen.is_set():
        return
    _frozen.set()
    gc.collect()  # what is garbage already is not kept for good
    gc.freeze()
