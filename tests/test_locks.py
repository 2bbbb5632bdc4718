"""Bounded locks: one stuck transaction cannot stop every writer forever."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from configsync.events.store import APPEND_LOCK_KEY
from tests.conftest import Api, make_api

URL = "/v1/configs/pay/prod"


@pytest.fixture(params=[True, False], ids=["group-commit", "a-commit-each"])
def api(request: pytest.FixtureRequest, pg: Engine, pg_url: str) -> Iterator[Api]:
    yield from make_api(pg_url, pg, lock_timeout_seconds=1.0, group_commit=request.param)


def test_a_write_behind_a_held_append_lock_fails_with_503_within_the_bound(
    api: Api, pg: Engine
) -> None:
    owner = api.person("owner@example.com")
    assert api.put(URL, headers=owner, json={"data": {"A": 1}}).status_code == 201
    with pg.connect() as blocker:
        blocker.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": APPEND_LOCK_KEY})
        began = time.monotonic()
        stuck = api.put(URL, headers=owner, json={"data": {"A": 2}})
        took = time.monotonic() - began
        blocker.rollback()  # the stuck transaction ends: its lock is released
    assert stuck.status_code == 503, stuck.text
    assert stuck.json()["error"] == "ServiceUnavailable" and "lock" in stuck.json()["detail"]
    assert 0.9 < took < 3
    after = api.put(URL, headers=owner, json={"data": {"A": 2}})
    assert after.status_code == 200 and after.json()["version"] == 2
    assert api.events() == 2


def test_api_sessions_carry_the_lock_and_idle_timeouts(pg: Engine, pg_url: str) -> None:
    api = next(
        make_api(pg_url, pg, lock_timeout_seconds=1.5, idle_in_transaction_timeout_seconds=30)
    )
    with api.app.state.engine.connect() as conn:
        assert conn.scalar(text("SHOW lock_timeout")) == "1500ms"
        assert conn.scalar(text("SHOW idle_in_transaction_session_timeout")) == "30s"
