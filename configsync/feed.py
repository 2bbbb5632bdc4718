"""The change feed: PostgreSQL LISTEN/NOTIFY keeps every API process's caches coherent.

A write announces what changed inside its own transaction (`pg_notify` is transactional: the
message goes out on commit, and never for a rolled-back write); its own process hears of it from
the write path's listeners right after commit. Messages are typed values with one encoding.
Every process runs one listener thread; while it is not connected the caches are switched off,
and on every (re)connection they are emptied, since messages may have been missed.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg2
import psycopg2.extensions
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

CHANNEL = "configsync_changes"


@dataclass(frozen=True, slots=True)
class ConfigMoved:
    """A config got a new version (written, deleted, rolled back...)."""

    service: str
    environment: str
    version: int


@dataclass(frozen=True, slots=True)
class KeyRevoked:
    """An API key stopped working: every process drops it from its cache."""

    key_hash: str


@dataclass(frozen=True, slots=True)
class KeysDestroyed:
    """Data keys of secrets were destroyed: every process drops them from its cache."""

    key_ids: tuple[str, ...]


Message = ConfigMoved | KeyRevoked | KeysDestroyed


def encode(message: Message) -> str:
    if isinstance(message, ConfigMoved):
        return f"config:{message.service}/{message.environment}:{message.version}"
    if isinstance(message, KeysDestroyed):
        return "destroyed:" + " ".join(message.key_ids)
    return f"key:{message.key_hash}"


def decode(payload: str) -> Message | None:
    """The message a payload carries; None for one this version does not know."""
    kind, _, rest = payload.partition(":")
    if kind == "key" and rest:
        return KeyRevoked(rest)
    if kind == "destroyed" and rest:
        return KeysDestroyed(tuple(rest.split(" ")))
    if kind == "config":
        stream, _, version = rest.rpartition(":")
        service, _, environment = stream.partition("/")
        if service and environment and version.isdigit():
            return ConfigMoved(service, environment, int(version))
    return None


_NOTIFY = text(
    "SELECT pg_notify(:channel, payload) FROM unnest(CAST(:payloads AS text[])) AS payload"
)


def notify(session: Session, messages: Sequence[Message]) -> None:
    """Tell the other processes, once `session`'s transaction commits (never if it rolls back).

    `pg_notify` is transactional; on SQLite, which has no feed, there are no other processes
    that cache anything. This process learns of its own writes from the write path's listeners.
    """
    if not messages:
        return
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(_NOTIFY, {"channel": CHANNEL, "payloads": [encode(m) for m in messages]})


class ChangeFeed:
    """A thread that LISTENs and hands each payload to `on_message`."""

    def __init__(
        self,
        database_url: str,
        on_message: Callable[[Message], None],
        on_connected: Callable[[], None],
        on_disconnected: Callable[[], None],
    ) -> None:
        url = make_url(database_url)
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_message = on_message
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe()  # stop() writes here to end the select at once
        self._thread = threading.Thread(
            target=self._run, name="configsync-change-feed", daemon=True
        )
        self.connected = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)

    def _run(self) -> None:
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                self._listen()
                backoff = 0.2
            except Exception as exc:  # the database went away: caches off until it is back
                log.warning("change feed disconnected: %s", exc)
            self.connected.clear()
            self._on_disconnected()
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def _listen(self) -> None:
        # TCP keepalives, not queries, tell a dead connection from a quiet one: an idle feed
        # does no database work, and a silent peer is noticed within about 4 seconds (the
        # caches are switched off then). A closed connection is noticed at once (readable, EOF).
        conn = psycopg2.connect(
            self._dsn,
            application_name="configsync-change-feed",  # what pg_stat_activity shows
            keepalives=1,
            keepalives_idle=2,
            keepalives_interval=1,
            keepalives_count=2,
        )
        try:
            conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
            with conn.cursor() as cursor:
                cursor.execute(f"LISTEN {CHANNEL}")
            self._on_connected()
            self.connected.set()
            while not self._stopping.is_set():
                select.select([conn, self._wake_r], [], [])
                if self._stopping.is_set():
                    return
                conn.poll()  # raises once the connection is gone
                while conn.notifies:
                    message = decode(conn.notifies.pop(0).payload)
                    if message is not None:
                        self._on_message(message)
        finally:
            conn.close()
