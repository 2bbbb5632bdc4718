"""Write throughput through HTTP: PUT, PATCH and the original `POST /config/update` of ~4 KB
configs with a person's token, spread over 500 configs per wrk thread, against a server as
deployed (`serve --workers 2`, PostgreSQL, a Celery worker on Redis), loaded with
`wrk -t2 -c16 --latency` (Debian's wrk); then one writer alone (`-c1`). The API's CPU time per
write is its process group's, over each run. After the warm-up the tables are analyzed, as
autovacuum would have done in a deployment past its first minute (`_analyze` says why).

The baseline, measured in the same run: etcd's v3 gateway (`PUT` of the same bytes under 1,000
keys) when `etcd` is installed (apt-get install etcd-server), else the trivial FastAPI app
accepting the same body with POST. It is measured at the start of every round, and each round's
ratios are taken against it (the machine's speed drifts within minutes); the medians are printed.

Usage: python -m bench.write_http [--duration 5s] [--rounds 3]
Targets (issue 14): PUT >= 0.25 x etcd's put rate, p99 < 50 ms; one writer p50 < 5 ms; PATCH and
/config/update within 10% of PUT.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import text

from bench._common import document, fresh_database
from bench.pipeline import REDIS, audited, start_worker, stop
from bench.read import TRIVIAL_UVICORN, _cpu_seconds, serve, server_env
from configsync.db import make_engine

LUA = """
local counter = 0
local thread_id = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
function init(args)
  thread_id = id
end
local head = [[%(head)s]]
local tail = [[%(tail)s]]
function request()
  counter = counter + 1
  local n = counter %% %(spread)d
  local headers = {[%(auth)s] = %(token)s, ["Content-Type"] = "application/json"}
  return wrk.format(%(method)s, %(path)s, headers, %(body)s)
end
"""


ETCD_LUA = """
local keys = {%(keys)s}
local counter = 0
function request()
  counter = counter + 1
  return wrk.format("POST", "/v3/kv/put", {["Content-Type"] = "application/json"},
                    '{"key": "' .. keys[(counter %% 1000) + 1] .. '", "value": "%(value)s"}')
end
"""


def _script(tmp: Path, name: str, **parts: object) -> Path:
    path = tmp / f"{name}.lua"
    path.write_text(LUA % parts)
    return path


def _wrk(url: str, script: Path, duration: str, connections: int) -> dict[str, float]:
    threads = min(2, connections)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}", "--latency"]
    out = subprocess.run(
        [*command, "-s", str(script), url], capture_output=True, text=True, check=True
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} error responses\n{out}")

    def ms(label: str) -> float:
        value = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out)
        assert value is not None, out
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[value.group(2)]
        return float(value.group(1)) * scale

    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rate is not None, out
    return {"rate": float(rate.group(1)), "p50": ms("50%"), "p99": ms("99%")}


def _etcd(tmp: Path, port: int) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("etcd")
    if exe is None:
        return None
    process = subprocess.Popen(
        [
            exe,
            "--data-dir",
            str(tmp / "etcd"),
            "--listen-client-urls",
            f"http://127.0.0.1:{port}",
            "--advertise-client-urls",
            f"http://127.0.0.1:{port}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{port + 1}",
            "--log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.post(f"http://127.0.0.1:{port}/v3/kv/range", json={"key": "eA=="}, timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("etcd did not start")


def _analyze(url: str) -> None:
    """Give the tables the statistics a deployment's have once autovacuum's first analyze has
    run (within about a minute of its first writes). A database made a few seconds ago has none,
    and PostgreSQL then reads the worker's catch-up ranges by scanning and sorting whole tables:
    measured here, PostgreSQL's CPU per write 0.9-1.0 ms without, 0.6-0.7 ms with, the worker's
    0.44-0.67 ms against 0.27-0.35 ms (2026-12-02)."""
    engine = make_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("ANALYZE"))
    finally:
        engine.dispose()


def _settle(url: str, pause: float = 2.0) -> float:
    """Wait until the audit log holds every event (the worker has caught up), then `pause`;
    the seconds it took."""
    began = time.monotonic()
    engine = make_engine(url)
    try:
        while time.monotonic() - began < 120:
            with engine.connect() as conn:
                last = conn.scalar(text("SELECT coalesce(max(position), 0) FROM events"))
            if audited(engine) >= int(last or 0):
                break
            time.sleep(0.2)
    finally:
        engine.dispose()
    time.sleep(pause)
    return time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", default="5s", help="each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of PUT, PATCH, update")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    exe = Path(sys.executable).with_name("configsync")
    api_port, base_port = 18741, 18742
    doc = json.dumps(document())
    # The counter goes into the document, so every write changes it (an unchanged write is
    # answered without appending and would flatter the figures).
    head, tail = doc[:-1] + ', "n": ', "}"
    processes: list[subprocess.Popen[bytes]] = []
    with fresh_database() as url, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        try:
            # As deployed: the projections run in a Celery worker on Redis, not in the API.
            env = server_env(url, CONFIGSYNC_REDIS_URL=REDIS)
            worker = start_worker(url, str(tmp / "audit.log"))
            server = serve(
                [str(exe), "serve", "--port", str(api_port), "--workers", "2"], env, api_port
            )
            processes.append(server)
            api = f"http://127.0.0.1:{api_port}"
            httpx.post(api + "/auth/signup", json={"email": "w@example.com", "password": "p" * 12})
            token = httpx.post(
                api + "/auth/login", json={"email": "w@example.com", "password": "p" * 12}
            ).json()["access_token"]
            auth = {"auth": '"Authorization"', "token": json.dumps(f"Bearer {token}")}
            spread = {"spread": 500, "head": head, "tail": tail}
            path = '"/v1/configs/bench/e" .. thread_id .. "-" .. n'
            scripts = {
                "PUT": _script(
                    tmp,
                    "put",
                    method='"PUT"',
                    path=path,
                    body='[[{"data": ]] .. head .. counter .. tail .. "}"',
                    **auth,
                    **spread,
                ),
                "PATCH": _script(
                    tmp,
                    "patch",
                    method='"PATCH"',
                    path=path,
                    body='[[{"data": {"n": ]] .. counter .. "}}"',
                    **auth,
                    **spread,
                ),
                "POST /config/update": _script(
                    tmp,
                    "update",
                    method='"POST"',
                    path='"/config/update"',
                    body=(
                        '[[{"name": "bench", "environment": "u]] .. thread_id .. "-" .. n .. '
                        '[[", "config": ]] .. head .. counter .. tail .. "}"'
                    ),
                    **auth,
                    **spread,
                ),
            }
            etcd = _etcd(tmp, base_port)
            if etcd is not None:
                processes.append(etcd)
                value = base64.b64encode((head + "0" + tail).encode()).decode()
                keys = ", ".join(
                    f'"{base64.b64encode(f"key-{i:04d}".encode()).decode()}"' for i in range(1000)
                )
                baseline_name = "etcd v3 gateway put"
                baseline = tmp / "etcd.lua"
                baseline.write_text(ETCD_LUA % {"keys": keys, "value": value})
            else:
                (tmp / "body.json").write_text(doc)
                processes.append(
                    serve(
                        [*TRIVIAL_UVICORN, "--port", str(base_port), "bench.trivial_app:app"],
                        {**env, "CONFIGSYNC_BENCH_BODY": str(tmp / "body.json")},
                        base_port,
                    )
                )
                baseline_name = "trivial app POST (no store)"
                baseline = _script(
                    tmp,
                    "trivial",
                    method='"POST"',
                    path='"/doc"',
                    body='[[{"data": ]] .. head .. counter .. tail .. "}"',
                    auth='"X-Bench"',
                    token='"1"',
                    **spread,
                )
            base_url = f"http://127.0.0.1:{base_port}"
            # Warm up: every config exists before the measured runs (they update, not create).
            _wrk(api, scripts["PUT"], "5s", 16)
            _wrk(api, scripts["POST /config/update"], "3s", 16)
            _wrk(base_url, baseline, "2s", 16)
            _analyze(url)
            print(f"document: {len(doc)} bytes; wrk -t2 -c16 -d{args.duration}; 2 API workers")
            print(
                f"{'':28} {'writes/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs baseline':>12} "
                f"{'API CPU ms/write':>17}"
            )
            # Rounds in turn (baseline, PUT, PATCH, update, baseline, ...): the store grows as
            # the run goes, so a fixed order would hand the later kinds a bigger table; and the
            # machine's speed drifts by a tenth or more within minutes, so each round's ratio is
            # taken against the baseline measured just before it. Medians of the rounds.
            bases: list[dict[str, float]] = []
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in scripts}
            for _ in range(args.rounds):
                bases.append(_wrk(base_url, baseline, args.duration, 16))
                for name, script in scripts.items():
                    cpu = _cpu_seconds(server.pid)
                    found = _wrk(api, script, args.duration, 16)
                    seconds = float(args.duration.rstrip("s"))
                    found["cpu"] = (
                        1000 * (_cpu_seconds(server.pid) - cpu) / (found["rate"] * seconds)
                    )
                    found["ratio"] = found["rate"] / bases[-1]["rate"]
                    runs[name].append(found)
            base = {k: statistics.median(b[k] for b in bases) for k in ("rate", "p50", "p99")}
            print(f"{baseline_name:28} {base['rate']:9.0f} {base['p50']:8.2f} {base['p99']:8.2f}")
            rates: dict[str, float] = {}
            for name, measured in runs.items():
                med = {
                    k: statistics.median(r[k] for r in measured)
                    for k in ("rate", "p50", "p99", "cpu", "ratio")
                }
                rates[name] = med["rate"]
                print(
                    f"{name:28} {med['rate']:9.0f} {med['p50']:8.2f} {med['p99']:8.2f} "
                    f"{med['ratio']:11.3f}x {med['cpu']:17.2f}"
                )
            each = ", ".join(f"{r['ratio']:.3f}x" for r in runs["PUT"])
            baselines = ", ".join(f"{b['rate']:.0f}" for b in bases)
            print(f"each round's PUT / baseline: {each} (the baseline's rates: {baselines}/s)")
            for name in ("PATCH", "POST /config/update"):
                print(f"{name} / PUT: {rates[name] / rates['PUT']:.3f} (medians of {args.rounds})")
            # Alone means alone: not beside the worker still applying the loaded runs' events.
            settled = _settle(url)
            alone = _wrk(api, scripts["PUT"], args.duration, 1)
            print(
                f"one writer alone (PUT, -c1, after {settled:.1f} s for the worker to catch up): "
                f"p50 {alone['p50']:.2f} ms, p99 {alone['p99']:.2f} ms"
            )
        finally:
            stop(worker)
            for process in processes:
                process.terminate()
                process.wait(timeout=30)


if __name__ == "__main__":
    main()
