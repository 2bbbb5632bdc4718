"""The change feed: PostgreSQL LISTEN/NOTIFY keeps every API process's caches coherent.

A write announces what changed inside its own transaction (`pg_notify` is transactional: the
message goes out on commit, and never for a rolled-back write), and to its own process right
after commit. Every process runs one listener thread; while it is not connected the caches are
switched off, and on every (re)connection they are emptied, since messages may have been missed.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable

import psycopg2
import psycopg2.extensions
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from configsync.db import after_commit

log = logging.getLogger(__name__)

CHANNEL = "configsync_changes"
# Sessions whose info carries this key call it with each announced payload after commit.
LOCAL_LISTENER = "configsync.local_changes"


def announce(session: Session, payload: str) -> None:
    """Tell every process, once this transaction commits, that `payload` changed."""
    notify(session, [payload])
    announce_locally(session, payload)


def notify(session: Session, payloads: list[str]) -> None:
    """The other processes' part of `announce`: messages that go out when `session` commits."""
    if payloads and session.get_bind().dialect.name == "postgresql":
        session.execute(
            text(
                "SELECT pg_notify(:channel, payload)"
                " FROM unnest(CAST(:payloads AS text[])) AS payload"
            ),
            {"channel": CHANNEL, "payloads": payloads},
        )


def announce_locally(session: Session, payload: str) -> None:
    """This process's part of `announce`, after `session` commits."""
    local = session.info.get(LOCAL_LISTENER)
    if local is not None:
        after_commit(session, lambda: local(payload))


class ChangeFeed:
    """A thread that LISTENs and hands each payload to `on_message`."""

    def __init__(
        self,
        database_url: str,
        on_message: Callable[[str], None],
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
        conn = psycopg2.connect(self._dsn)
        try:
            conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
            with conn.cursor() as cursor:
                cursor.execute(f"LISTEN {CHANNEL}")
            self._on_connected()
            self.connected.set()
            while not self._stopping.is_set():
                ready, _, _ = select.select([conn, self._wake_r], [], [], 1.0)
                if self._stopping.is_set():
                    return
                if not ready:
                    with conn.cursor() as cursor:  # notice a dead connection within a second
                        cursor.execute("SELECT 1")
                    continue
                conn.poll()
                while conn.notifies:
                    self._on_message(conn.notifies.pop(0).payload)
        finally:
            conn.close()
