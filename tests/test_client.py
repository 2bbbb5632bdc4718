"""configsync.client against a real server: watch across a server restart, the last good copy,
typed errors, and the asyncio client."""

from __future__ import annotations

import asyncio
import json
import stat
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from configsync.client import (
    AsyncClient,
    Client,
    Conflict,
    Deleted,
    NotFound,
    Unauthorized,
    Unreachable,
)
from tests.conftest import PASSWORD, clean_env, eventually, free_port, running_server

pytestmark = pytest.mark.slow


@pytest.fixture
def server_env(tmp_path: Path, pg_url: str, pg: Any) -> dict[str, str]:
    return clean_env(
        DATABASE_URL=pg_url, SECRET_KEY="k" * 48, CONFIGSYNC_AUDIT_LOG=str(tmp_path / "a.log")
    )


def _token(server: str) -> str:
    httpx.post(server + "/auth/signup", json={"email": "dev@example.com", "password": PASSWORD})
    answer = httpx.post(
        server + "/auth/login", json={"email": "dev@example.com", "password": PASSWORD}
    )
    return str(answer.json()["access_token"])


def test_watch_sees_the_final_state_across_a_server_restart_and_the_cache_serves_meanwhile(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    port = free_port()
    cache = tmp_path / "cache"
    seen: list[dict[str, Any]] = []
    with running_server(tmp_path, server_env, port=port) as server:
        owner = Client(server, token=_token(server), cache=False)
        owner.put("pay", "prod", {"N": 1})
        key = owner._call(
            "POST", "/v1/api-keys", json={"name": "svc", "service": "pay", "permission": "read"}
        )["key"]
        service = Client(server, api_key=key, cache=cache)
        assert service.get("pay", "prod")["stale"] is False
        copy = next(cache.rglob("pay.prod.json"))
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
        assert json.loads(copy.read_text())["data"] == {"N": 1}

        def follow() -> None:
            watcher = Client(server, api_key=key, cache=False)
            for change in watcher.watch("pay", "prod", wait=5):
                seen.append(change)
                if change["data"] == {"N": 4}:
                    return

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        assert eventually(lambda: len(seen) == 1, 20)  # the current version first
        owner.put("pay", "prod", {"N": 2})
        assert eventually(lambda: [c["version"] for c in seen] == [1, 2], 20), seen

    # The server is down: reads answer the last good copy, marked stale.
    stale = service.get("pay", "prod")
    assert stale["stale"] is True and stale["data"] == {"N": 1} and stale["version"] == 1
    with pytest.raises(Unreachable):
        service.get("pay", "prod", fallback=False)
    with pytest.raises(Unreachable):
        service.get("pay", "prod", version=1)  # a past version is never answered from a copy

    with running_server(tmp_path, server_env, port=port):  # back, on the same address
        owner.put("pay", "prod", {"N": 3})
        owner.put("pay", "prod", {"N": 4})
        thread.join(timeout=60)
        assert not thread.is_alive(), seen
        fresh = service.get("pay", "prod")
        assert fresh["stale"] is False and fresh["version"] == 4
        assert json.loads(copy.read_text())["data"] == {"N": 4}  # the copy is replaced
    versions = [c["version"] for c in seen]
    assert versions == sorted(set(versions)) and versions[:2] == [1, 2]
    assert seen[-1]["version"] == 4 and seen[-1]["data"] == {"N": 4}  # the final state arrives


def test_errors_are_typed(tmp_path: Path, server_env: dict[str, str]) -> None:
    with running_server(tmp_path, server_env) as server:
        client = Client(server, token=_token(server), cache=False)
        with pytest.raises(NotFound) as missing:
            client.get("nothing", "prod")
        assert missing.value.status == 404 and not isinstance(missing.value, Deleted)
        client.put("pay", "prod", {"A": 1})
        with pytest.raises(Conflict) as stale:
            client.put("pay", "prod", {"A": 2}, expected_version=5)
        assert stale.value.current_version == 1
        client.delete("pay", "prod")
        with pytest.raises(Deleted) as gone:
            client.get("pay", "prod")
        assert gone.value.deleted_at_version == 2
        with pytest.raises(Unauthorized):
            Client(server, token="not-a-token", cache=False).get("pay", "prod")
        # An idempotency key given by the caller makes a retried write land once.
        first = client.put("pay", "prod", {"A": 3}, idempotency_key="deploy-42")
        again = client.put("pay", "prod", {"A": 3}, idempotency_key="deploy-42")
        assert first["version"] == again["version"] == 3


def test_the_asyncio_client_reads_writes_and_watches(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    with running_server(tmp_path, server_env) as server:
        token = _token(server)

        async def scenario() -> list[int]:
            async with AsyncClient(server, token=token, cache=tmp_path / "cache") as client:
                created = await client.put("pay", "prod", {"A": 1}, reason="first")
                assert created["version"] == 1
                patched = await client.patch("pay", "prod", {"B": 2}, expected_version=1)
                assert patched["data"] == {"A": 1, "B": 2}
                with pytest.raises(Conflict):
                    await client.patch("pay", "prod", {"C": 3}, expected_version=1)
                assert (await client.get("pay", "prod"))["version"] == 2
                versions = []
                async for change in client.watch("pay", "prod", wait=5):
                    versions.append(change["version"])
                    if change["version"] == 2:
                        await client.put("pay", "prod", {"A": 9})
                    if change["version"] == 3:
                        break
                return versions

        assert asyncio.run(scenario()) == [2, 3]
    cached = AsyncClient(server, token=token, cache=tmp_path / "cache")
    stale = asyncio.run(cached.get("pay", "prod"))
    assert stale["stale"] is True and stale["data"] == {"A": 9}
