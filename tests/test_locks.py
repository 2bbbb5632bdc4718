"""Bounded locks: one stuck transaction cannot stop every writer forever."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Engine, text

from configsync.events.store import APPEND_LOCK_KEY, STREAM_LOCK_NAMESPACE
from tests.conftest import Api, eventually, make_api, scalar

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


def _hold_stream(conn: Any, stream: str) -> None:
    conn.execute(
        text("SELECT pg_advisory_xact_lock(:ns, hashtext(:stream))"),
        {"ns": STREAM_LOCK_NAMESPACE, "stream": stream},
    )


def test_a_stream_held_too_long_fails_only_its_own_writer_in_a_shared_batch(
    pg: Engine, pg_url: str
) -> None:
    """The group commit locks its batch's streams together; when one of them is held past the
    lock timeout by another transaction, the writes to the other streams of that batch still go
    through (run again alone), and only the held stream's writer gets the 503."""
    api = next(make_api(pg_url, pg, lock_timeout_seconds=1.0))
    group = api.app.state.write_path.group
    owner = api.person("owner@example.com")
    for config in ("lead/prod", "pay/prod", "pay/dev"):
        api.put(f"/v1/configs/{config}", headers=owner, json={"data": {"A": 0}})
    with pg.connect() as stream_holder, pg.connect() as append_holder:
        _hold_stream(stream_holder, "pay/prod")
        # The first batch (lead/prod alone) waits for the append lock, so that the two writes
        # sent meanwhile queue and make the next batch together.
        append_holder.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": APPEND_LOCK_KEY})
        with ThreadPoolExecutor(max_workers=3) as pool:
            before = group.items
            lead = pool.submit(api.put, "/v1/configs/lead/prod", headers=owner, json={"data": {}})
            assert eventually(lambda: group.items == before + 1)  # its batch is in flight
            held, free = (
                pool.submit(api.put, f"/v1/configs/{c}", headers=owner, json={"data": {"A": 1}})
                for c in ("pay/prod", "pay/dev")
            )
            assert eventually(lambda: group.waiting == 2)
            append_holder.rollback()
            assert lead.result().status_code == 200
            assert free.result().status_code == 200, free.result().text
            assert held.result().status_code == 503
            assert "lock" in held.result().json()["detail"]
        stream_holder.rollback()
    assert group.largest_batch == 2
    assert api.get("/v1/configs/pay/prod", headers=owner).json()["version"] == 1
    assert api.get("/v1/configs/pay/dev", headers=owner).json()["version"] == 2


def test_a_batch_takes_its_stream_locks_in_one_order_whatever_its_writes_order(pg: Engine) -> None:
    """Two batches sharing streams (two API processes) must not deadlock: each takes its locks in
    the order of their keys. A batch of [b, a] whose `a` is held by another transaction waits
    for `a` before taking `b`, when `a`'s key comes first."""
    first, second = sorted(
        ("pay/prod", "pay/dev"), key=lambda s: scalar(pg, f"SELECT hashtext('{s}')")
    )
    call = text(
        "SELECT * FROM configsync_lock_and_read_many(:ns, :streams, :services, :environments)"
    )
    with pg.connect() as holder, pg.connect() as batch, pg.connect() as probe:
        _hold_stream(holder, first)
        batch.execute(text("SET lock_timeout = '5s'"))
        order = [second, first]  # the writes' order: the key order's reverse
        params = {
            "ns": STREAM_LOCK_NAMESPACE,
            "streams": order,
            "services": [s.split("/")[0] for s in order],
            "environments": [s.split("/")[1] for s in order],
        }
        with ThreadPoolExecutor(max_workers=1) as pool:
            waiting = pool.submit(lambda: batch.execute(call, params).all())
            assert eventually(
                lambda: (
                    scalar(
                        pg,
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                    )
                    == 1
                )
            )
            # Waiting for the first key, the batch holds nothing: the second is free.
            took = probe.execute(
                text("SELECT pg_try_advisory_xact_lock(:ns, hashtext(:stream))"),
                {"ns": STREAM_LOCK_NAMESPACE, "stream": second},
            ).scalar()
            probe.rollback()
            holder.rollback()
            rows = waiting.result(timeout=10)
        batch.rollback()
    assert took is True
    # Rows come back in the writes' order.
    assert [f"{r.o_service}/{r.o_environment}" for r in rows] == order


def test_a_batch_reads_its_configs_by_key_not_by_scanning_every_config(pg: Engine) -> None:
    """A new deployment's tables have no statistics: the batch's read must still look each
    config and service up by its key (an index scan per name), never read the tables whole."""
    call = text(
        "SELECT * FROM configsync_lock_and_read_many(:ns, :streams, :services, :environments)"
    )
    names = [("pay", "e7"), ("pay", "absent"), ("other", "e3")]
    with pg.connect() as conn:
        conn.execute(
            text(
                "INSERT INTO services (name, owner_id, created_at, secret_paths)"
                " VALUES ('pay', NULL, now(), '[]')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO config_current"
                " (service, environment, version, data, deleted, updated_at, updated_by, position)"
                " SELECT 'pay', 'e' || i, 1, '{\"n\": ' || i || '}', false, now(), '{}', i"
                " FROM generate_series(1, 2000) AS i"
            )
        )
        scans = text(
            "SELECT relname, seq_scan, idx_scan FROM pg_stat_xact_user_tables"
            " WHERE relname IN ('config_current', 'services') ORDER BY relname"
        )
        # This backend's counts not yet reported (they may hold earlier transactions' too).
        before = conn.execute(scans).all()
        rows = conn.execute(
            call,
            {
                "ns": STREAM_LOCK_NAMESPACE,
                "streams": [f"{s}/{e}" for s, e in names],
                "services": [s for s, _ in names],
                "environments": [e for _, e in names],
            },
        ).all()
        after = conn.execute(scans).all()
        conn.rollback()
    assert [(r.o_service, r.o_environment, r.o_version, r.o_data) for r in rows] == [
        ("pay", "e7", 1, '{"n": 7}'),
        ("pay", "absent", None, None),
        ("other", "e3", None, None),
    ]
    assert [r.o_service_exists for r in rows] == [True, True, False]
    read = {
        a.relname: (a.seq_scan - b.seq_scan, a.idx_scan - b.idx_scan)
        for a, b in zip(after, before, strict=True)
    }
    assert {name: seq for name, (seq, _) in read.items()} == {"config_current": 0, "services": 0}
    assert all(index >= 1 for _, index in read.values())
