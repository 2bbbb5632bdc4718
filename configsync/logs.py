"""Logs on standard error: every logger's records as JSON lines, and one line per request.

`configure` sets up the process (API workers and the Celery worker alike); `AccessLog` is the
request log, kept off the hot path: a request appends one tuple to a queue, and a background
thread turns the queue into JSON lines and writes them in one go every `FLUSH_SECONDS` (and at
shutdown). A line may be a fraction of a second late; none is lost while the process runs.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from datetime import UTC, datetime
from typing import IO, Any

import orjson
from starlette.types import Scope

from configsync.background import Periodic

# Loggers that write a line per task or per tick: shown only when the level is DEBUG.
REPEATED = ("celery.app.trace", "celery.worker.strategy", "celery.beat")
FLUSH_SECONDS = 0.5
MAX_PENDING = 100_000  # past this (standard error blocked), the oldest lines are dropped
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _instant(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message (and the exception)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _instant(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


class StandardError(logging.StreamHandler[IO[str]]):
    """A handler writing to whatever `sys.stderr` is when a record comes (a test runner swaps
    it), marked as ours so that `configure` can replace it."""

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def configure(level: str, fmt: str) -> None:
    """Send every record at `level` and above to standard error, as JSON lines or as text.

    Idempotent: a second call replaces the handler the first added (and leaves any other, such
    as a test runner's, alone). The per-task and per-tick lines of Celery show at DEBUG only.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, StandardError)]:
        root.removeHandler(handler)
    handler = StandardError()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # warnings too, as records of the `py.warnings` logger
    repeated = logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING
    for name in REPEATED:
        logging.getLogger(name).setLevel(repeated)


# What the request log keeps of a request: time, request id, method, route template, path,
# status, seconds, caller, client address.
Entry = tuple[float, str | None, str, str, str, int, float, str | None, str | None]


class AccessLog:
    """The request log of one process: a line per request, noted by middleware.RequestGuard
    (outermost, so every request is noted: the cached fast path's reads and the refusals too).

    The caller is whoever authenticated: the fast path and the caller dependency put `kind:id`
    in the request's state (never a token, a key or an email); the query string is not kept.
    """

    def __init__(self, stream: IO[str] | None = None, fmt: str = "json") -> None:
        self._stream = stream
        self._json = fmt == "json"
        self._pending: deque[Entry] = deque(maxlen=MAX_PENDING)
        self._writer = Periodic("configsync-access-log", FLUSH_SECONDS, self.flush)
        self._second = -1
        self._second_text = ""

    def note(self, scope: Scope, state: dict[str, Any], status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or state.get("route") or "(unmatched)"
        client = scope.get("client")
        self._pending.append(  # thread-safe; the flush pops from the other end
            (
                time.time(),
                state.get("request_id"),
                scope["method"],
                route,
                scope["path"],
                status,
                seconds,
                state.get("caller"),
                client[0] if client else None,
            )
        )

    def flush(self) -> int:
        """Write what was noted; returns how many lines."""
        lines = []
        while self._pending:
            lines.append(self._line(self._pending.popleft()))
        if lines:
            stream = self._stream or sys.stderr
            stream.write("".join(lines))
            stream.flush()
        return len(lines)

    def _time(self, at: float) -> str:
        """`_instant(at)`, with the part up to the second made once per second."""
        second = int(at)
        if second != self._second:
            self._second = second
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{int((at - second) * 1000):03d}+00:00"

    def _line(self, entry: Entry) -> str:
        at, request_id, method, route, path, status, seconds, caller, client = entry
        if not self._json:
            who = caller or "-"
            return f"{self._time(at)} {status} {method} {path} {seconds * 1000:.1f}ms {who}\n"
        fields = {
            "time": self._time(at),
            "level": "INFO",
            "logger": "configsync.access",
            "request_id": request_id,
            "method": method,
            "route": route,
            "path": path,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "caller": caller,
            "client": client,
        }
        return orjson.dumps(fields).decode() + "\n"

    def start(self) -> None:
        self._writer.start()

    def stop(self) -> None:
        self._writer.stop()
