"""Idle long polls on one API process: what they cost while nothing changes, and how fast they
all hear of a write.

Starts `configsync serve` (one process, PostgreSQL), opens N long polls of one config
(`If-None-Match` + `?wait=`), each on its own connection, then measures over an idle period the
server's CPU and the database's transactions, then writes once and times every poll's answer.
Prints: idle CPU (% of a core), database transactions/s while idle, wake latency p50/p99/max,
answers and dropped connections, resident memory per watcher.

Usage: python -m bench.watchers [--watchers 1000] [--idle 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import text

from bench._common import MASTER_KEY, fresh_database, percentile
from bench.read import serve, server_env
from bench.read_many import resident_kib
from configsync.db import make_engine

PORT = 18761


def _cpu_seconds(group: int) -> float:
    from bench.read import _cpu_seconds as cpu

    return cpu(group)


def _transactions(url: str) -> int:
    engine = make_engine(url)
    with engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = "
                "current_database()"
            )
        ).scalar()
    engine.dispose()
    return int(found or 0)


async def _poll(path: bytes, answered: list[float], dropped: list[str], ready: list[int]) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        writer.write(path)
        await writer.drain()
        ready.append(1)
        status = await reader.readline()
        answered.append(time.monotonic())
        if b" 200 " not in status:
            dropped.append(status.decode(errors="replace").strip())
        writer.close()
    except OSError as exc:
        dropped.append(repr(exc))


async def _run(args: argparse.Namespace, url: str, server: int, key: str) -> None:
    request = (
        f"GET /v1/configs/bench/prod?wait=120 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f'X-API-Key: {key}\r\nIf-None-Match: "1"\r\n\r\n'
    ).encode()
    answered: list[float] = []
    dropped: list[str] = []
    ready: list[int] = []
    rss_before = resident_kib(server)
    tasks = []
    for i in range(args.watchers):
        tasks.append(asyncio.create_task(_poll(request, answered, dropped, ready)))
        if i % 200 == 199:
            await asyncio.sleep(0.05)  # do not flood the accept queue
    while len(ready) + len(dropped) < args.watchers:
        await asyncio.sleep(0.1)
    await asyncio.sleep(3)  # every request reached its wait
    rss_after = resident_kib(server)
    cpu_before, xact_before = _cpu_seconds(server), _transactions(url)
    await asyncio.sleep(args.idle)
    cpu_idle = _cpu_seconds(server) - cpu_before
    xacts = _transactions(url) - xact_before - 2  # the two reads of the counter itself
    print(f"{args.watchers} long polls waiting on one API process")
    print(
        f"  idle: {cpu_idle / args.idle * 100:.1f}% of a core, {xacts / args.idle:.1f} "
        "database transactions/s"
    )
    print(f"  resident memory per watcher: {(rss_after - rss_before) * 1024 / args.watchers:.0f} B")
    written = time.monotonic()
    await asyncio.to_thread(_write, url)
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    latencies = [(t - written) * 1000 for t in answered]
    print(
        f"  after a write: {len(latencies) - len(dropped)} answered 200, {len(dropped)} not "
        f"(dropped or other status)"
    )
    print(
        f"  wake latency: p50 {percentile(latencies, 50):.0f} ms, p99 "
        f"{percentile(latencies, 99):.0f} ms, max {max(latencies):.0f} ms"
    )
    if dropped:
        print(f"  first problems: {dropped[:3]}")


def _write(url: str) -> None:
    """A write the way another API process makes one: through the store, with its NOTIFY."""
    from configsync.configs import commands
    from configsync.configs.commands import WriteContext
    from configsync.db import make_session_factory, unit_of_work
    from configsync.domain.actor import SYSTEM
    from configsync.secrets.crypto import MasterKeys
    from configsync.secrets.vault import Vault

    factory = make_session_factory(make_engine(url))
    ctx = WriteContext(actor=SYSTEM, vault=Vault(MasterKeys.parse(MASTER_KEY)))
    with unit_of_work(factory) as session:
        commands.patch(session, "bench", "prod", {"WOKEN": True}, ctx)


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

    with fresh_database() as url:
        key = seed(url)
        env = server_env(url, CONFIGSYNC_MAX_WAIT_SECONDS="120")
        server = serve([exe, "serve", "--port", str(PORT)], env, PORT)
        try:
            httpx.get(f"http://127.0.0.1:{PORT}/v1/configs/bench/prod", headers={"X-API-Key": key})
            asyncio.run(_run(args, url, server.pid, key))
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
