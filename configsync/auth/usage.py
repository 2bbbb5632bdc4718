"""When each API key was last used: noted in memory on every request, written in the background.

A write per authenticated read would cost the hot path a database round trip; instead each
process keeps the latest time per key and a thread writes them every few seconds (and at
shutdown). `last_used_at` may be a few seconds late; it never moves backwards.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from sqlalchemy import or_, update
from sqlalchemy.orm import Session, sessionmaker

from configsync.auth.models import ApiKeyRow
from configsync.db import unit_of_work

log = logging.getLogger(__name__)


class KeyUsage:
    def __init__(self, sessions: sessionmaker[Session], interval: float) -> None:
        self._sessions = sessions
        self._interval = interval
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def seen(self, key_id: str) -> None:
        now = time.time()
        with self._lock:
            self._seen[key_id] = now

    def flush(self) -> int:
        """Write the noted times; returns how many keys were written."""
        with self._lock:
            seen, self._seen = self._seen, {}
        if not seen:
            return 0
        try:
            with unit_of_work(self._sessions) as session:
                for key_id, at in seen.items():
                    moment = datetime.fromtimestamp(at, UTC)
                    session.execute(
                        update(ApiKeyRow)
                        .where(ApiKeyRow.id == key_id)
                        .where(
                            or_(ApiKeyRow.last_used_at.is_(None), ApiKeyRow.last_used_at < moment)
                        )
                        .values(last_used_at=moment)
                    )
        except Exception as exc:  # the database is away: keep the times for the next flush
            log.warning("could not record API keys' last use (%s); will retry", exc)
            with self._lock:
                for key_id, at in seen.items():
                    self._seen[key_id] = max(at, self._seen.get(key_id, 0.0))
            return 0
        return len(seen)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="configsync-key-usage", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()
