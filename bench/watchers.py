"""Idle long polls on one API process: what they cost while nothing changes, and how fast they
all hear of a write.

Starts `configsync serve` (one process, PostgreSQL), opens N long polls of one config
(`If-None-Match` + `?wait=`), each on its own connection, then measures over an idle period the
server's CPU and the database's transactions, then writes once and times every poll's answer.
Prints: idle CPU (% of a core), database transactions/s while idle, wake latency p50/p99/max,
answers and dropped connections, resident memory per watcher. Then two baselines, in the same
run and with the same client: the trivial FastAPI app (bench/trivial_app.py, one uvicorn
process with the same settings) holding as many requests on an asyncio.Event and answering them
all with the same document when it is set, which says how far ConfigSync is from what uvicorn
itself costs; and the floor (bench/bare_server.py: bare uvloop writing ready bytes to every held
connection), which says what this machine's kernel and the measuring client cost whatever the
server.

The client is one uvloop process with a protocol per connection (a stream and a task each cost
it about three times as much, and it timed itself); the write is prepared before the clock
starts.

Usage: python -m bench.watchers [--watchers 1000] [--idle 10]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import httpx
import uvloop
from sqlalchemy import text

from bench._common import MASTER_KEY, fresh_database, percentile
from bench.pipeline import stop
from bench.read import TRIVIAL_UVICORN, serve, server_env
from bench.read_many import resident_kib
from configsync.db import make_engine

PORT = 18761
TRIVIAL_PORT = 18762
BARE_PORT = 18763


def _cpu_seconds(group: int) -> float:
    from bench.read import _cpu_seconds as cpu

    return cpu(group)


class ServerStatements:
    """What the server's own database connections do: each poll sees, for every backend serving
    a connection of the server's process, whether it ran a statement since the last poll
    (`pg_stat_activity.state_change` moved). Autovacuum and this probe are not counted, as the
    database-wide transaction counters would."""

    QUERY = text(
        "SELECT pid, state_change FROM pg_stat_activity WHERE client_port = ANY(:ports) "
        "AND client_addr IS NOT NULL"
    )

    def __init__(self, url: str, server: int) -> None:
        self._conn = make_engine(url).connect().execution_options(isolation_level="AUTOCOMMIT")
        self._server = server
        self._seen: dict[int, object] = {}
        self.statements = 0

    def _ports(self) -> list[int]:
        lines = subprocess.run(
            ["ss", "-tnpH", "state", "established", "( dport = :5432 )"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        return [
            int(line.split()[2].rpartition(":")[2])
            for line in lines
            if f"pid={self._server}," in line
        ]

    def poll(self) -> None:
        self._conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        for pid, changed in self._conn.execute(self.QUERY, {"ports": self._ports()}):
            if pid in self._seen and self._seen[pid] != changed:
                self.statements += 1
            self._seen[pid] = changed

    def close(self) -> None:
        self._conn.close()


class _Watcher(asyncio.Protocol):
    """One held request on its own connection. A protocol, not a stream and a task: the client
    must cost far less per answer than the server, or the bench times itself."""

    def __init__(self, request: bytes, held: Held) -> None:
        self._request = request
        self._held = held
        self._transport: asyncio.Transport | None = None
        self._answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return
        self._answered = True
        self._held.answered.append(time.monotonic())
        if not data.startswith(b"HTTP/1.1 200 "):
            self._held.dropped.append(data.partition(b"\r\n")[0].decode(errors="replace"))
        assert self._transport is not None
        self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._answered:
            self._answered = True
            self._held.dropped.append(f"closed before an answer: {exc!r}")
        self._held.settled()


class Held:
    """N requests, each on its own connection, waiting on one server."""

    def __init__(self, port: int, request: bytes, count: int) -> None:
        self.answered: list[float] = []
        self.dropped: list[str] = []
        self.count = count
        self._port = port
        self._request = request
        self._closed = 0
        self._all_closed: asyncio.Event | None = None

    def settled(self) -> None:
        self._closed += 1
        if self._closed == self.count and self._all_closed is not None:
            self._all_closed.set()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._all_closed = asyncio.Event()
        for i in range(self.count):
            try:
                await loop.create_connection(
                    lambda: _Watcher(self._request, self), "127.0.0.1", self._port
                )
            except OSError as exc:
                self.dropped.append(repr(exc))
                self.settled()
            if i % 200 == 199:
                await asyncio.sleep(0.05)  # do not flood the accept queue
        await asyncio.sleep(3)  # every request reached its wait

    async def woken_by(self, trigger: Callable[[], object]) -> list[float]:
        """Latencies (ms) of every answer after `trigger` runs (in a thread; prepared before,
        so that only the write and the answers are timed)."""
        assert self._all_closed is not None
        began = time.monotonic()
        await asyncio.to_thread(trigger)
        try:
            await asyncio.wait_for(self._all_closed.wait(), 120)
        except TimeoutError:
            raise SystemExit(
                f"{self.count - len(self.answered)} of {self.count} requests unanswered "
                f"after 120 s ({self._closed} connections closed)"
            ) from None
        return [(t - began) * 1000 for t in self.answered]

    def report(self, latencies: list[float]) -> str:
        return (
            f"{self.count - len(self.dropped)} answered 200, {len(self.dropped)} not; "
            f"p50 {percentile(latencies, 50):.0f} ms, p99 {percentile(latencies, 99):.0f} ms, "
            f"max {max(latencies):.0f} ms"
            + (f"; first problems: {self.dropped[:3]}" if self.dropped else "")
        )


async def _ours(args: argparse.Namespace, url: str, server: int, key: str) -> list[float]:
    request = (
        f"GET /v1/configs/bench/prod?wait=120 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f'X-API-Key: {key}\r\nIf-None-Match: "1"\r\n\r\n'
    ).encode()
    held = Held(PORT, request, args.watchers)
    rss_before = resident_kib(server)
    await held.open()
    rss_after = resident_kib(server)
    # Each API process writes when its keys were last used every 5 s: the polls' arrival once.
    await asyncio.sleep(6)
    statements = ServerStatements(url, server)
    statements.poll()
    cpu_before, idle_end = _cpu_seconds(server), time.monotonic() + args.idle
    while time.monotonic() < idle_end:
        await asyncio.sleep(0.2)
        statements.poll()
    cpu_idle = _cpu_seconds(server) - cpu_before
    statements.close()
    print(f"{args.watchers} long polls waiting on one API process")
    print(
        f"  idle: {cpu_idle / args.idle * 100:.1f}% of a core; the server's database "
        f"connections ran statements {statements.statements} times in {args.idle:.0f} s "
        "(polled every 0.2 s)"
    )
    print(f"  resident memory per watcher: {(rss_after - rss_before) * 1024 / args.watchers:.0f} B")
    latencies = await held.woken_by(_Writer(url))
    print(f"  after a write: {held.report(latencies)}")
    return latencies


async def _trivial(args: argparse.Namespace) -> list[float]:
    request = b"GET /held HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    held = Held(TRIVIAL_PORT, request, args.watchers)
    await held.open()
    with httpx.Client(base_url=f"http://127.0.0.1:{TRIVIAL_PORT}", timeout=60) as client:
        latencies = await held.woken_by(lambda: client.post("/release"))
    print(f"the trivial app (one process) answering {args.watchers} held requests at once")
    print(f"  after the release: {held.report(latencies)}")
    return latencies


async def _bare(args: argparse.Namespace) -> list[float]:
    held = Held(BARE_PORT, b"GET /held HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", args.watchers)
    await held.open()
    with socket.create_connection(("127.0.0.1", BARE_PORT)) as release:
        latencies = await held.woken_by(lambda: release.sendall(b"POST / HTTP/1.1\r\n\r\n"))
    print(f"the floor: bare uvloop (bench/bare_server.py) writing {args.watchers} ready answers")
    print(f"  after the release: {held.report(latencies)}")
    return latencies


class _Writer:
    """A write the way another API process makes one: through the store, with its NOTIFY.
    Imports, engine and connection are made before the clock starts: only the write is timed."""

    def __init__(self, url: str) -> None:
        from configsync.configs import commands
        from configsync.configs.commands import WriteContext
        from configsync.db import make_session_factory, unit_of_work
        from configsync.domain.actor import SYSTEM
        from configsync.secrets.crypto import MasterKeys
        from configsync.secrets.vault import Vault

        self._patch, self._unit_of_work = commands.patch, unit_of_work
        self._factory = make_session_factory(make_engine(url))
        self._ctx = WriteContext(actor=SYSTEM, vault=Vault(MasterKeys.parse(MASTER_KEY)))
        with unit_of_work(self._factory) as session:
            session.execute(text("SELECT 1"))  # the pool's connection, opened now

    def __call__(self) -> None:
        with self._unit_of_work(self._factory) as session:
            self._patch(session, "bench", "prod", {"WOKEN": True}, self._ctx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=10.0)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the server inherits it
    if hard < args.watchers + 100:
        raise SystemExit(f"the open-files limit ({hard}) is below {args.watchers} watchers")
    exe = str(Path(sys.executable).with_name("configsync"))
    from bench.read import seed

    with fresh_database() as url, tempfile.TemporaryDirectory() as tmp:
        key = seed(url)
        env = server_env(url, CONFIGSYNC_MAX_WAIT_SECONDS="120")
        server = serve([exe, "serve", "--port", str(PORT)], env, PORT)
        try:
            answer = httpx.get(
                f"http://127.0.0.1:{PORT}/v1/configs/bench/prod", headers={"X-API-Key": key}
            )
            ours = uvloop.run(_ours(args, url, server.pid, key))
        finally:
            stop(server)
        body = Path(tmp) / "body.json"
        body.write_bytes(answer.content)
        one_worker = [*TRIVIAL_UVICORN, "--port", str(TRIVIAL_PORT), "bench.trivial_app:app"]
        one_worker[one_worker.index("--workers") + 1] = "1"
        trivial = serve(one_worker, {**env, "CONFIGSYNC_BENCH_BODY": str(body)}, TRIVIAL_PORT)
        try:
            baseline = uvloop.run(_trivial(args))
        finally:
            stop(trivial)
        bare = serve(
            [sys.executable, "-m", "bench.bare_server", str(BARE_PORT), str(body)],
            env,
            BARE_PORT,
            answers=False,
        )
        try:
            floor = uvloop.run(_bare(args))
        finally:
            stop(bare)
    p99 = percentile(ours, 99)
    print(
        f"wake p99, ConfigSync / the trivial app: {p99 / percentile(baseline, 99):.2f} "
        "(1.0: as fast as uvicorn can answer)"
    )
    print(
        f"wake p99, ConfigSync / the floor: {p99 / percentile(floor, 99):.2f} "
        "(1.0: as fast as this machine delivers ready bytes to as many sockets)"
    )


if __name__ == "__main__":
    main()
