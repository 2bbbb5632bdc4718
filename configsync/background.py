"""Work done beside the requests: a function run every few seconds (and once more at stop),
and values requests note in memory for it to write."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from configsync.db import unit_of_work

log = logging.getLogger(__name__)
K = TypeVar("K")
V = TypeVar("V")


class Periodic:
    """A daemon thread that calls `work` every `interval` seconds until stopped, then once more
    (so what was noted just before shutdown is not lost)."""

    def __init__(self, name: str, interval: float, work: Callable[[], object]) -> None:
        self._name = name
        self._interval = interval
        self._work = work
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._work()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._work()


class Noted(Generic[K, V]):
    """The latest value per key, noted in memory by requests and written to the database by a
    thread every few seconds (and at stop): what a request may note without paying a database
    round trip. A value may reach the database a few seconds late; when a write fails, what it
    held is kept for the next one (a value noted meanwhile wins)."""

    what = "noted values"

    def __init__(self, sessions: sessionmaker[Session], interval: float, name: str) -> None:
        self._sessions = sessions
        self._lock = threading.Lock()
        self._noted: dict[K, V] = {}
        self._writer = Periodic(name, interval, self.flush)

    def note(self, key: K, value: V) -> None:
        with self._lock:
            self._noted[key] = value

    def pending(self) -> dict[K, V]:
        """What is noted and not written yet (a copy)."""
        with self._lock:
            return dict(self._noted)

    def flush(self) -> int:
        """Write what was noted; returns how many values."""
        with self._lock:
            noted, self._noted = self._noted, {}
        if not noted:
            return 0
        try:
            with unit_of_work(self._sessions) as session:
                self.write(session, noted)
        except Exception as exc:  # the database is away: keep them for the next flush
            log.warning("could not write %s (%s); will retry", self.what, exc)
            with self._lock:
                for key, value in noted.items():
                    self._noted.setdefault(key, value)
            return 0
        return len(noted)

    def write(self, session: Session, noted: dict[K, V]) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._writer.start()

    def stop(self) -> None:
        self._writer.stop()
