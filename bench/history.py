"""Reads of the past on a long history: one config with 10,000 versions on PostgreSQL.

Prints the time of GET ?version=N for N = 1, 5,000 and 10,000, and of diff?from=1&to=10000,
through HTTP (the API in-process, so the figures are the server's work, not the network's).
Usage: python -m bench.history [--versions N]
Target: each under 50 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time

from fastapi.testclient import TestClient
from sqlalchemy.orm import sessionmaker

from bench._common import fresh_database
from configsync.app import create_app
from configsync.auth.permissions import Caller
from configsync.auth.service import signup
from configsync.auth.tokens import issue
from configsync.configs import commands
from configsync.configs.commands import WriteContext
from configsync.db import make_engine, unit_of_work
from configsync.secrets.vault import Vault
from configsync.settings import Settings

VAULT = Vault.ephemeral()

SECRET = "bench-secret-key-0123456789-0123456789-abcdef"


def seed(url: str, versions: int) -> str:
    factory = sessionmaker(bind=make_engine(url), expire_on_commit=False)
    with unit_of_work(factory) as session:
        user = signup(session, "bench@example.com", "bench-password")
    caller = Caller(kind="user", id=user.id, name=user.email, role="user")
    ctx = WriteContext(vault=VAULT, actor=caller.actor())
    document = {f"KEY_{k}": k for k in range(40)}
    for v in range(1, versions + 1):
        document[f"KEY_{v % 40}"] = f"value-{v}"  # every write changes something
        with unit_of_work(factory) as session:
            commands.replace(session, "bench", "prod", dict(document), ctx)
    token, _ = issue(user.id, "user", key=SECRET, minutes=60)
    return token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with fresh_database() as url:
        began = time.perf_counter()
        token = seed(url, args.versions)
        print(f"seeded {args.versions} versions in {time.perf_counter() - began:.1f} s")
        app = create_app(Settings(database_url=url, secret_key=SECRET))
        headers = {"Authorization": f"Bearer {token}"}
        base = "/v1/configs/bench/prod"
        half = args.versions // 2
        cases = [
            ("GET ?version=1", f"{base}?version=1"),
            (f"GET ?version={half}", f"{base}?version={half}"),
            (f"GET ?version={args.versions}", f"{base}?version={args.versions}"),
            (f"diff?from=1&to={args.versions}", f"{base}/diff?from=1&to={args.versions}"),
        ]
        with TestClient(app) as client:
            for label, path in cases:
                assert client.get(path, headers=headers).status_code == 200
                times = []
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    response = client.get(path, headers=headers)
                    times.append((time.perf_counter() - start) * 1000)
                    assert response.status_code == 200
                median, worst = statistics.median(times), max(times)
                print(f"  {label:28s} median {median:6.1f} ms   max {worst:6.1f} ms")


if __name__ == "__main__":
    main()
