"""Read throughput: GET a config with an API key, the same with If-None-Match (304), and a
trivial FastAPI app returning the same ~4 KB document as pre-serialized bytes, all under the
same uvicorn settings (2 workers, uvloop, httptools) in the same run, loaded with
`wrk -t2 -c32 -d10s` (Debian's wrk: apt-get install wrk).

Usage: python -m bench.read [--duration 10s]
Targets: GET >= 0.8 x the trivial app; 304 >= 1.0 x.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy.orm import sessionmaker

from bench._common import fresh_database
from configsync.auth.permissions import Caller
from configsync.auth.service import create_api_key, signup
from configsync.configs import commands
from configsync.configs.commands import WriteContext
from configsync.db import make_engine, unit_of_work
from configsync.secrets.vault import Vault

VAULT = Vault.ephemeral()

SECRET = "bench-secret-key-0123456789-0123456789-abcdef"


def document() -> dict[str, object]:
    """A ~4 KB config: the size of a typical service's settings."""
    doc: dict[str, object] = {
        "API_URL": "https://api.example.com/v2",
        "TIMEOUT": 30,
        "RETRIES": 3,
        "FEATURE_FLAGS": {f"flag_{i}": i % 2 == 0 for i in range(20)},
        "DATABASE": {"host": "db.internal", "port": 5432, "pool": {"min": 2, "max": 20}},
    }
    for i in range(60):
        doc[f"SETTING_{i:02d}"] = f"value-{i}-" + "x" * 30
    return doc


def seed(url: str) -> str:
    factory = sessionmaker(bind=make_engine(url), expire_on_commit=False)
    with unit_of_work(factory) as session:
        user = signup(session, "bench@example.com", "bench-password")
        caller = Caller(kind="user", id=user.id, name=user.email, role="user")
        commands.replace(
            session, "bench", "prod", document(), WriteContext(vault=VAULT, actor=caller.actor())
        )
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


def serve(args: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"server on port {port} did not start")


def wrk(url: str, headers: dict[str, str], duration: str) -> tuple[float, str]:
    command = ["wrk", "-t2", "-c32", f"-d{duration}", "--latency", url]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        raise SystemExit(f"{url}: {non_2xx.group(1)} error responses\n{out}")
    return rps, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", default="10s")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    exe = Path(sys.executable).with_name("configsync")
    uvicorn = [
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
    with fresh_database() as url, tempfile.TemporaryDirectory() as tmp:
        key = seed(url)
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "SECRET_KEY": SECRET,
            "CONFIGSYNC_ENV": "production",
            "CONFIGSYNC_LOG_LEVEL": "warning",
        }
        env.pop("REDIS_URL", None)
        api_port, trivial_port = 18731, 18732
        api = serve([str(exe), "serve", "--port", str(api_port), "--workers", "2"], env, api_port)
        config_url = f"http://127.0.0.1:{api_port}/v1/configs/bench/prod"
        body = httpx.get(config_url, headers={"X-API-Key": key}).content
        body_file = Path(tmp) / "body.json"
        body_file.write_bytes(body)
        trivial = serve(
            [*uvicorn, "--port", str(trivial_port), "bench.trivial_app:app"],
            {**env, "CONFIGSYNC_BENCH_BODY": str(body_file)},
            trivial_port,
        )
        try:
            assert httpx.get(config_url, headers={"X-API-Key": key}).json()["data"] == document()
            print(f"document: {len(body)} bytes; wrk -t2 -c32 -d{args.duration}; 2 workers each")
            results = {}
            scenarios = [
                ("trivial app (pre-serialized bytes)", f"http://127.0.0.1:{trivial_port}/doc", {}),
                ("GET config, API key", config_url, {"X-API-Key": key}),
                (
                    "GET config, If-None-Match -> 304",
                    config_url,
                    {"X-API-Key": key, "If-None-Match": '"1"'},
                ),
            ]
            for label, url_, headers in scenarios:
                wrk(url_, headers, "2s")  # warm every worker's caches
                results[label] = wrk(url_, headers, args.duration)
                rps, p99 = results[label]
                print(f"  {label:38s} {rps:10.0f} req/s   p99 {p99}")
            base = results[scenarios[0][0]][0]
            print(f"ratio GET/trivial: {results[scenarios[1][0]][0] / base:.2f} (target >= 0.8)")
            print(f"ratio 304/trivial: {results[scenarios[2][0]][0] / base:.2f} (target >= 1.0)")
        finally:
            for process in (api, trivial):
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=20)


if __name__ == "__main__":
    main()
