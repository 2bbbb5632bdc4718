"""Prometheus metrics: what is counted, and the scrape that reads them.

Counted where the work is decided, once: requests (the cached fast path included) by route
template in `RequestMetrics` and `configs.fastpath`, config reads by format and cache, writes by
action after they commit (a write path listener), conflicts where a stale expected version is
refused, appends and group-commit batches in `configs.commands.record`, long-poll waiters in
`configs.waiters`, failed and throttled logins in `auth.throttle`. Projection positions and lag
are read from their checkpoints at scrape time, so an API process reports the worker's progress.

With `serve --workers N` every worker writes its samples to `PROMETHEUS_MULTIPROC_DIR` (set by
`serve`), and a scrape of any worker adds up all of them.
"""

from __future__ import annotations

import bisect
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import configsync

_LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60)

REQUESTS = Counter(
    "configsync_http_requests_total",
    "HTTP requests answered, by route template, method and status",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "configsync_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template",
    ["route", "method"],
    buckets=_LATENCY_BOUNDS,
)
READS = Counter(
    "configsync_config_reads_total",
    "Current configs answered (200 and 304), by format and whether the cache answered",
    ["format", "cache"],
)
WRITES = Counter(
    "configsync_config_writes_total", "Committed config changes, by action", ["action"]
)
CONFLICTS = Counter(
    "configsync_write_conflicts_total", "Writes refused for a stale expected version (412)"
)
APPEND_SECONDS = Histogram(
    "configsync_append_seconds",
    "Time to append a batch of events and apply the inline projections (under the append lock)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
BATCH_SIZE = Histogram(
    "configsync_group_commit_batch_size",
    "Writes that shared one append transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
WAITERS = Gauge(
    "configsync_long_poll_waiters",
    "Long polls waiting for a newer version",
    multiprocess_mode="livesum",
)
LOGIN_FAILURES = Counter("configsync_login_failures_total", "Failed logins")
LOGIN_THROTTLED = Counter("configsync_login_throttled_total", "Logins refused with 429")
BUILD = Gauge(
    "configsync_build_info",
    "The running ConfigSync",
    ["version", "python"],
    multiprocess_mode="max",
)
BUILD.labels(configsync.__version__, platform.python_version()).set(1)

CONFIG_ROUTE = "/v1/configs/{service}/{environment}"


class FastPathTally:
    """The cached fast path's counts, kept as plain integers and added to the Prometheus metrics
    by a flush: every second (a thread of each process) and before every scrape.

    A Prometheus increment costs more than the cached answer it would count (in multiprocess
    mode it writes a memory-mapped file under a lock): counted directly, /metrics cost cached
    GETs 15% (bench/read.py). Counts are never lost, only up to a second late in another
    process's scrape.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reads: dict[tuple[str, int], int] = {}
        self._buckets = [0] * (len(_LATENCY_BOUNDS) + 1)  # the last: +Inf
        self._seconds = 0.0
        self._flusher: threading.Thread | None = None

    def count(self, fmt: str, status: int, seconds: float) -> None:
        bucket = bisect.bisect_left(_LATENCY_BOUNDS, seconds)
        with self._lock:
            key = (fmt, status)
            self._reads[key] = self._reads.get(key, 0) + 1
            self._buckets[bucket] += 1
            self._seconds += seconds
        if self._flusher is None:
            self._start()

    def flush(self) -> None:
        with self._lock:
            reads, self._reads = self._reads, {}
            buckets, self._buckets = self._buckets, [0] * (len(_LATENCY_BOUNDS) + 1)
            seconds, self._seconds = self._seconds, 0.0
        if not reads:
            return
        for (fmt, status), n in reads.items():
            REQUESTS.labels(CONFIG_ROUTE, "GET", str(status)).inc(n)
            READS.labels(fmt, "hit").inc(n)
        # A histogram takes one observation at a time; these are many, bucketed already.
        timer: Any = REQUEST_SECONDS.labels(CONFIG_ROUTE, "GET")
        timer._sum.inc(seconds)
        for index, n in enumerate(buckets):
            if n:
                timer._buckets[index].inc(n)

    def _start(self) -> None:
        with self._lock:
            if self._flusher is not None:
                return
            self._flusher = threading.Thread(
                target=self._run, name="configsync-metrics-flush", daemon=True
            )
        self._flusher.start()

    def _run(self) -> None:
        while True:
            time.sleep(1.0)
            self.flush()


FAST_PATH = FastPathTally()


def count_read(fmt: str) -> None:
    """A GET the endpoint answered (the cache could not)."""
    READS.labels(fmt, "miss").inc()


class RequestCounts:
    """Requests by route template, method and status, and their durations. `labels()` costs more
    than the increment it returns: children are kept per key."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    def count(self, template: str, method: str, status: int, seconds: float) -> None:
        counter = self._counters.get((template, method, status))
        if counter is None:
            counter = REQUESTS.labels(template, method, str(status))
            self._counters[(template, method, status)] = counter
        counter.inc()
        timer = self._timers.get((template, method))
        if timer is None:
            timer = self._timers[(template, method)] = REQUEST_SECONDS.labels(template, method)
        timer.observe(seconds)


REQUEST_COUNTS = RequestCounts()


class RequestMetrics:
    """ASGI middleware: every request that reaches FastAPI's router, by route template, method
    and status (the direct paths in front of it count their own: FAST_PATH, REQUEST_COUNTS)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            template = getattr(scope.get("route"), "path", None) or "(unmatched)"
            REQUEST_COUNTS.count(template, scope["method"], status, time.perf_counter() - began)


class ProjectionCollector(Collector):
    """Each projection's position and lag, read from the checkpoints at scrape time."""

    def __init__(self, status: Callable[[], list[Any]]) -> None:
        self.status = status

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            rows = self.status()
        except Exception:  # the database is away: readiness says so; the scrape goes on
            return
        position = GaugeMetricFamily(
            "configsync_projection_position", "Last event a projection applied", labels=["name"]
        )
        lag = GaugeMetricFamily(
            "configsync_projection_lag_events",
            "Events appended that a projection has not applied yet",
            labels=["name"],
        )
        last = GaugeMetricFamily("configsync_log_position", "Last event appended to the log")
        for row in rows:
            position.add_metric([row.name], row.position)
            lag.add_metric([row.name], row.lag)
        if rows:
            last.add_metric([], rows[0].last_position)
        yield position
        yield lag
        yield last


def scrape(extra: Collector | None = None) -> tuple[bytes, str]:
    """The text exposition: this process's samples, or every worker's in multiprocess mode."""
    FAST_PATH.flush()
    return generate_latest(registry(extra)), CONTENT_TYPE_LATEST


def serve_worker_metrics(port: int, status: Callable[[], list[Any]]) -> None:
    """`configsync worker --metrics-port`: projection positions and lag, and build info, on a
    port of the worker's own (a thread of prometheus_client's)."""
    start_http_server(port, registry=registry(ProjectionCollector(status)))


def registry(extra: Collector | None = None) -> CollectorRegistry:
    """A registry of this scrape's own: the process's (or every worker's) samples, and `extra`."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry = CollectorRegistry()
        registry.register(_Everything(REGISTRY))
    if extra is not None:
        registry.register(extra)
    return registry


class _Everything(Collector):
    """The default registry's metrics, inside a registry of the scrape's own (so that the
    projection collector is never registered twice)."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def collect(self) -> Iterator[Any]:
        yield from self.source.collect()
