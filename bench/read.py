"""Read throughput: GET a config with an API key, the same with If-None-Match (304), and a
trivial FastAPI app returning the same ~4 KB document as pre-serialized bytes, all under the
same uvicorn settings (2 workers, uvloop, httptools) in the same run, loaded with
`wrk -t2 -c32 -d10s` (Debian's wrk: apt-get install wrk).

A second config has about a fifth of its keys secret (sealed in the database, opened for the
key): its cached GET against the plain one, and both read uncached (`consistent=true`, every
read opens the secrets), measured in the same run.

Usage: python -m bench.read [--duration 10s]
Targets: GET >= 0.8 x the trivial app; 304 >= 1.0 x; GET with secrets >= 0.95 x without.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy.orm import sessionmaker

from bench._common import MASTER_KEY, document, fresh_database
from configsync.auth.permissions import Caller
from configsync.auth.service import create_api_key, signup
from configsync.configs import commands
from configsync.configs.commands import WriteContext
from configsync.db import make_engine, unit_of_work
from configsync.secrets.crypto import MasterKeys
from configsync.secrets.vault import Vault

VAULT = Vault(MasterKeys.parse(MASTER_KEY))

SECRET = "bench-secret-key-0123456789-0123456789-abcdef"


def seed(url: str) -> str:
    factory = sessionmaker(bind=make_engine(url), expire_on_commit=False)
    with unit_of_work(factory) as session:
        user = signup(session, "bench@example.com", "bench-password")
        caller = Caller(kind="user", id=user.id, name=user.email, role="user")
        ctx = WriteContext(vault=VAULT, actor=caller.actor())
        commands.replace(session, "bench", "prod", document(), ctx)
        commands.replace(session, "bench", "secret", document(secrets=True), ctx)
    with unit_of_work(factory) as session:
        _, key = create_api_key(
            session,
            caller,
            name="bench",
            service="bench",
            environment=None,
            permission="read",
            expires_in_days=None,
        )
    return key


def server_env(url: str, **settings: str) -> dict[str, str]:
    """The environment a benchmarked server runs in: production mode on `url`, embedded tasks
    (no broker), quiet logs unless `settings` say otherwise."""
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SECRET_KEY": SECRET,
        "CONFIGSYNC_ENV": "production",
        "CONFIGSYNC_MASTER_KEYS": MASTER_KEY,
        "CONFIGSYNC_LOG_LEVEL": "warning",
        **settings,
    }
    env.pop("REDIS_URL", None)
    return env


# The trivial app's server: the uvicorn settings `configsync serve` uses (2 workers, uvloop,
# httptools), so the two differ only in the app.
TRIVIAL_UVICORN = [
    sys.executable,
    "-m",
    "uvicorn",
    "--workers",
    "2",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
    "--log-level",
    "warning",
]


def serve(
    args: list[str],
    env: dict[str, str],
    port: int,
    log: Path | None = None,
    *,
    answers: bool = True,
) -> subprocess.Popen[bytes]:
    """Start a server; ready when it answers GET /docs, or, for one that holds every request
    (`answers=False`: bench/bare_server.py), when its port accepts a connection."""
    process = subprocess.Popen(
        args,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab") if log else subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if answers:
                httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
            else:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except (httpx.HTTPError, OSError):
            time.sleep(0.2)
    raise SystemExit(f"server on port {port} did not start")


def wrk(url: str, headers: dict[str, str], duration: str) -> tuple[float, str]:
    out = _wrk(url, headers, duration)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        raise SystemExit(f"{url}: {non_2xx.group(1)} error responses\n{out}")
    return rps, p99


def _wrk(url: str, headers: dict[str, str], duration: str) -> str:
    command = ["wrk", "-t2", "-c32", f"-d{duration}", "--latency", url]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def _cpu_seconds(group: int) -> float:
    """CPU time (user + system) of every process in a process group so far."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == group:  # pgrp
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def _cpu_per_request(
    measured: tuple[str, int, str],
    baseline: tuple[str, int, str],
    headers: dict[str, str],
    duration: str,
    rounds: int,
) -> tuple[float, float]:
    """Median CPU microseconds per request of two servers (URL, process group, name) under the
    same load, alternated: steadier than req/s on a shared machine, where a neighbour's load
    moves the rate but not what a request costs."""
    costs: dict[str, list[float]] = {measured[2]: [], baseline[2]: []}
    for round_ in range(rounds):
        for url, group, name in [measured, baseline] if round_ % 2 == 0 else [baseline, measured]:
            before = _cpu_seconds(group)
            out = _wrk(url, headers, duration)
            used = _cpu_seconds(group) - before
            done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
            costs[name].append(used / done * 1e6)
    middle = {name: sorted(v)[len(v) // 2] for name, v in costs.items()}
    return middle[measured[2]], middle[baseline[2]]


def _alternated(
    measured: tuple[str, str],
    baseline: tuple[str, str],
    headers: dict[str, str],
    duration: str,
    rounds: int,
) -> float:
    """The median over `rounds` of measured/baseline req/s, the order swapped every round."""
    for url, _ in (measured, baseline):
        wrk(url, headers, "2s")  # warm the caches
    ratios = []
    for round_ in range(rounds):
        pair = [measured, baseline] if round_ % 2 == 0 else [baseline, measured]
        rate = {name: wrk(url, headers, duration)[0] for url, name in pair}
        ratios.append(rate[measured[1]] / rate[baseline[1]])
        print(
            f"  round {round_ + 1}: {baseline[1]} {rate[baseline[1]]:8.0f} req/s, "
            f"{measured[1]} {rate[measured[1]]:8.0f} req/s: {ratios[-1]:.3f}"
        )
    return sorted(ratios)[len(ratios) // 2]


def _latency(url: str, headers: dict[str, str], count: int = 300) -> str:
    """One client, one request at a time: the latency of a read that opens the secrets."""
    timings = []
    with httpx.Client(headers=headers) as client:
        for _ in range(count):
            began = time.perf_counter()
            client.get(url + "?consistent=true").raise_for_status()
            timings.append((time.perf_counter() - began) * 1000)
    timings.sort()
    return f"p50 {timings[count // 2]:.2f} ms, p99 {timings[int(count * 0.99)]:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", default="10s")
    parser.add_argument("--rounds", type=int, default=5, help="alternated secrets rounds")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    exe = Path(sys.executable).with_name("configsync")
    with fresh_database() as url, tempfile.TemporaryDirectory() as tmp:
        key = seed(url)
        env = server_env(url)
        api_port, trivial_port, quiet_port, unlogged_port = 18731, 18732, 18733, 18734
        # The API as deployed: its request log (a JSON line per request) written to a file.
        request_log = Path(tmp) / "requests.log"
        api = serve(
            [str(exe), "serve", "--port", str(api_port), "--workers", "2"],
            {**env, "CONFIGSYNC_LOG_LEVEL": "info"},
            api_port,
            log=request_log,
        )
        # The same API without its request log: what the log costs the hot path.
        unlogged = serve(
            [str(exe), "serve", "--port", str(unlogged_port), "--workers", "2"],
            {**env, "CONFIGSYNC_LOG_LEVEL": "info", "CONFIGSYNC_ACCESS_LOG": "false"},
            unlogged_port,
        )
        # The same API with request and read counting off: what /metrics costs the hot path.
        quiet = serve(
            [str(exe), "serve", "--port", str(quiet_port), "--workers", "2"],
            {
                **env,
                "CONFIGSYNC_LOG_LEVEL": "info",
                "CONFIGSYNC_METRICS": "false",
                "PROMETHEUS_MULTIPROC_DIR": "",
            },
            quiet_port,
            log=Path(tmp) / "quiet-requests.log",
        )
        config_url = f"http://127.0.0.1:{api_port}/v1/configs/bench/prod"
        body = httpx.get(config_url, headers={"X-API-Key": key}).content
        body_file = Path(tmp) / "body.json"
        body_file.write_bytes(body)
        trivial = serve(
            [*TRIVIAL_UVICORN, "--port", str(trivial_port), "bench.trivial_app:app"],
            {**env, "CONFIGSYNC_BENCH_BODY": str(body_file)},
            trivial_port,
        )
        try:
            assert httpx.get(config_url, headers={"X-API-Key": key}).json()["data"] == document()
            secret_url = config_url.replace("/prod", "/secret")
            answer = httpx.get(secret_url, headers={"X-API-Key": key}).json()
            assert answer["data"] == document(secrets=True)  # opened for the key
            print(f"document: {len(body)} bytes; wrk -t2 -c32 -d{args.duration}; 2 workers each")
            auth = {"X-API-Key": key}
            scenarios = [
                ("trivial app (pre-serialized bytes)", f"http://127.0.0.1:{trivial_port}/doc", {}),
                ("GET config, API key", config_url, auth),
                ("GET config, If-None-Match -> 304", config_url, {**auth, "If-None-Match": '"1"'}),
                ("uncached GET (consistent=true)", config_url + "?consistent=true", auth),
                ("uncached GET, a fifth secret", secret_url + "?consistent=true", auth),
            ]
            results: dict[str, tuple[float, str]] = {}
            for label, url_, headers in scenarios:
                wrk(url_, headers, "2s")  # warm every worker's caches
                results[label] = wrk(url_, headers, args.duration)
                rps, p99 = results[label]
                print(f"  {label:38s} {rps:10.0f} req/s   p99 {p99}")
            rate = {label: rps for label, (rps, _) in results.items()}
            base = rate[scenarios[0][0]]
            print(f"ratio GET/trivial: {rate[scenarios[1][0]] / base:.2f} (target >= 0.8)")
            print(f"ratio 304/trivial: {rate[scenarios[2][0]] / base:.2f} (target >= 1.0)")
            uncached = rate["uncached GET, a fifth secret"] / rate["uncached GET (consistent=true)"]
            print(f"ratio uncached GET with secrets/without: {uncached:.3f}")
            # Cached GETs against the trivial app, with and without secrets, then with metrics
            # and the request log on and off, alternated
            # round by round (the machine is shared: one pair of runs differs by more than the
            # effect measured).
            quiet_url = config_url.replace(str(api_port), str(quiet_port))
            unlogged_url = config_url.replace(str(api_port), str(unlogged_port))
            trivial_url = f"http://127.0.0.1:{trivial_port}/doc"
            comparisons = [
                ("GET config/trivial app", (config_url, "config"), (trivial_url, "trivial")),
                ("GET with secrets/without", (secret_url, "with"), (config_url, "without")),
                ("GET metrics on/off", (config_url, "on"), (quiet_url, "off")),
                ("GET request log on/off", (config_url, "logged"), (unlogged_url, "unlogged")),
            ]
            for label, measured, baseline in comparisons:
                middle = _alternated(measured, baseline, auth, args.duration, args.rounds)
                target = ">= 1.2" if "trivial" in label else ">= 0.95"
                print(f"ratio {label}, median of rounds: {middle:.3f} ({target})")
            logged, unlogged_cost = _cpu_per_request(
                (config_url, api.pid, "logged"),
                (unlogged_url, unlogged.pid, "unlogged"),
                auth,
                args.duration,
                args.rounds,
            )
            print(
                f"CPU per cached GET, median of rounds: request log on {logged:.1f} us, "
                f"off {unlogged_cost:.1f} us: {unlogged_cost / logged:.3f}"
            )
            print(f"uncached GET latency, no secrets:   {_latency(config_url, auth)}")
            print(f"uncached GET latency, with secrets: {_latency(secret_url, auth)}")
            with request_log.open() as lines:
                print(f"request log: {sum(1 for _ in lines)} lines written by the logged API")
        finally:
            for process in (api, trivial, quiet, unlogged):
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=20)


if __name__ == "__main__":
    main()
