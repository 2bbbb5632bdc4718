"""Reads spread over many configs: is the cache as good at 100,000 configs as at one?

Seeds N configs of ~4 KB, starts `configsync serve --workers 2` (which warms its caches in the
background), reads every config in turn until the rate says the caches are warm, then measures
with wrk, in one run: GETs of one config, then GETs
spread uniformly at random over all N (a Lua script picks the path). Prints both rates, their
ratio (target >= 0.8), the cache's memory per config (resident memory of the workers, before
and after the warm-up) and what the cache holds.

Usage: python -m bench.read_many [--configs 100000] [--duration 10s] [--warm-seconds 600]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import insert
from sqlalchemy.orm import sessionmaker

from bench._common import document, fresh_database
from bench.read import serve, server_env
from configsync.auth.models import ServiceRow
from configsync.db import make_engine
from configsync.domain.documents import compute_changes
from configsync.domain.events import CONFIG_CHANGED
from configsync.events import NewEvent, append_batch
from projections import current

ACTOR = {"actor": {"kind": "user", "id": "bench", "name": "bench"}, "request_id": None}
LEGACY_KEY = "bench-legacy-read-key-0123456789"  # API_KEY: reads every service
PORT = 18751


def seed(url: str, count: int) -> None:
    factory = sessionmaker(make_engine(url))
    changes = compute_changes({}, document())
    data = {"changes": changes, "reason": None, "rollback_of": None, "deleted": False}
    for start in range(0, count, 5000):
        names = [f"s{i}" for i in range(start, min(count, start + 5000))]
        with factory() as session:
            session.execute(insert(ServiceRow), [{"name": n, "owner_id": None} for n in names])
            events = [NewEvent(f"{n}/prod", 0, data, ACTOR, type=CONFIG_CHANGED) for n in names]
            append_batch(session, events)
            session.commit()
    with factory() as session:
        current.rebuild(session)
        session.commit()


def resident_kib(group: int) -> int:
    """Resident memory of the server's processes (the workers and their parent)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != group:
                continue
            status = (stat.parent / "status").read_text()
        except OSError:
            continue
        found = re.search(r"VmRSS:\s+(\d+) kB", status)
        total += int(found.group(1)) if found else 0
    return total


def wrk(url: str, duration: str, script: Path | None = None) -> float:
    command = ["wrk", "-t2", "-c32", f"-d{duration}", "-H", f"X-API-Key: {LEGACY_KEY}", url]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        raise SystemExit(f"{non_2xx.group(1)} error responses\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def lua(path: Path, count: int, sequential: bool) -> Path:
    pick = (
        "counter = counter + 1\n  local i = counter % n"
        if sequential
        else "local i = math.random(0, n - 1)"
    )
    path.write_text(
        f"local n = {count}\ncounter = math.random(0, n - 1)\n"
        f"math.randomseed(os.time())\n"
        f"request = function()\n  {pick}\n"
        f'  return wrk.format("GET", "/v1/configs/s" .. i .. "/prod")\nend\n'
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", type=int, default=100_000)
    parser.add_argument("--duration", default="10s")
    parser.add_argument("--warm-seconds", type=int, default=600)
    parser.add_argument("--cache-mib", type=int, default=800, help="each worker's cache bound")
    args = parser.parse_args()
    exe = str(Path(sys.executable).with_name("configsync"))
    with fresh_database() as url, tempfile.TemporaryDirectory() as tmp:
        began = time.monotonic()
        seed(url, args.configs)
        print(f"seeded {args.configs} configs of ~4 KB in {time.monotonic() - began:.0f} s")
        env = server_env(
            url,
            API_KEY=LEGACY_KEY,
            # Room for every config (about 7 KB each as the cache counts them).
            CONFIGSYNC_CACHE_MAX_BYTES=str(args.cache_mib * 1024 * 1024),
        )
        server = serve([exe, "serve", "--port", str(PORT), "--workers", "2"], env, PORT)
        base = f"http://127.0.0.1:{PORT}"
        try:
            assert httpx.get(base + "/v1/configs/s0/prod", headers={"X-API-Key": LEGACY_KEY})
            one = f"{base}/v1/configs/s0/prod"
            wrk(one, "2s")
            target = wrk(one, "5s")  # what a warm cache serves
            rss_before = resident_kib(server.pid)
            sequential = lua(Path(tmp) / "sequential.lua", args.configs, sequential=True)
            uniform = lua(Path(tmp) / "uniform.lua", args.configs, sequential=False)
            warm_began = time.monotonic()
            while time.monotonic() - warm_began < args.warm_seconds:
                rate = wrk(base + "/", "15s", sequential)
                print(f"  warming: {rate:8.0f} req/s")
                if rate > 0.6 * target:
                    break  # both workers hold (nearly) every config
            warm = time.monotonic() - warm_began
            rss_after = resident_kib(server.pid)
            single = wrk(one, args.duration)
            spread = wrk(base + "/", args.duration, uniform)
            single_again = wrk(one, args.duration)
            rate_one = (single + single_again) / 2
            per_config = (rss_after - rss_before) * 1024 / args.configs / 2  # two workers
            print(f"warm-up: {warm:.0f} s")
            print(f"GET one config:                 {rate_one:10.0f} req/s")
            print(f"GET spread over {args.configs:>7} configs: {spread:10.0f} req/s")
            print(f"ratio spread/one: {spread / rate_one:.2f} (target >= 0.8)")
            print(
                f"resident memory per config per worker: {per_config / 1024:.1f} KiB "
                f"({(rss_after - rss_before) / 1024:.0f} MiB over both workers)"
            )
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
