"""The per-process cache: bounded by size, least recently used out first, never emptied at once;
and the config cache's entries cost about their answer's size."""

from __future__ import annotations

import tracemalloc
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from configsync.cache import InvalidatingCache
from tests.conftest import Api

URL = "/v1/configs/{}/prod"


def test_past_its_bound_the_least_recently_used_go_one_at_a_time() -> None:
    cache: InvalidatingCache[str, bytes] = InvalidatingCache(enabled=True, max_size=100, size=len)
    for name in "abcd":
        cache.fill(name, b"x" * 25, cache.generation)
    assert len(cache) == 4 and cache.size == 100
    assert cache.get("a") == b"x" * 25  # a is now the most recently used
    cache.fill("e", b"y" * 30, cache.generation)
    # b and c (the least recently used) made room; a, d and e stay: not everything went.
    assert [k for k in "abcde" if cache.get(k) is not None] == ["a", "d", "e"]
    assert cache.size == 80 and cache.evictions == 2
    cache.fill("d", b"z" * 5, cache.generation)  # a refill replaces, and its size with it
    assert cache.size == 60
    cache.invalidate("a")
    assert cache.get("a") is None and cache.size == 35


def test_an_entry_larger_than_the_bound_is_kept_alone_rather_than_looping() -> None:
    cache: InvalidatingCache[str, bytes] = InvalidatingCache(enabled=True, max_size=10, size=len)
    cache.fill("small", b"1", cache.generation)
    cache.fill("huge", b"2" * 50, cache.generation)
    assert cache.get("huge") == b"2" * 50 and cache.get("small") is None


def test_a_fill_read_before_an_invalidation_is_discarded() -> None:
    cache: InvalidatingCache[str, int] = InvalidatingCache(enabled=True)
    generation = cache.generation
    cache.invalidate("k")  # a write landed while the fill was reading
    cache.fill("k", 1, generation)
    assert cache.get("k") is None and len(cache) == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("fgi"), st.sampled_from("abcdefgh"), st.integers(1, 40)),
        max_size=60,
    )
)
def test_the_size_is_always_the_sum_of_what_is_held_and_within_the_bound(
    operations: list[tuple[str, str, int]],
) -> None:
    cache: InvalidatingCache[str, bytes] = InvalidatingCache(enabled=True, max_size=100, size=len)
    model: dict[str, bytes] = {}
    for op, key, n in operations:
        if op == "f":
            cache.fill(key, b"v" * n, cache.generation)
            model[key] = b"v" * n
        elif op == "g":
            found = cache.get(key)
            assert found is None or found == model.get(key)
        else:
            cache.invalidate(key)
            model.pop(key, None)
        held = {k: v for k in "abcdefgh" if (v := cache._entries.get(k, (None, 0))[0]) is not None}
        assert cache.size == sum(len(v) for v in held.values())
        assert cache.size <= 100 or len(held) == 1
        assert all(model[k] == v for k, v in held.items())


def test_config_entries_cost_about_their_answer(pg_api: Api) -> None:
    api = pg_api
    owner = api.person("owner@example.com")
    document = {f"KEY_{i:03d}": "v" * 30 for i in range(100)}  # about 4 KB
    count = 60
    for i in range(count):
        assert api.put(URL.format(f"s{i}"), headers=owner, json={"data": document}).status_code
    key = {"X-API-Key": api.key(owner, "s0")}
    reader = api.app.state.runtime.reader
    for i in range(count):  # once, so that what the first loads make (statement caches) is made
        reader.load(f"s{i}", "prod")
    reader.cache.clear()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(count):
        reader.load(f"s{i}", "prod")
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    growth = after.compare_to(before, "filename")
    held = sum(stat.size_diff for stat in growth)
    entry: Any = reader.cached("s0", "prod")
    assert entry is not None and len(reader.cache) == count
    per_config = held / count
    # The answer's bytes and little else. Before: the parsed document beside them, and orjson's
    # 32 KB buffer under each answer's 4 KB, cost about 8x.
    assert per_config < 1.6 * len(entry.body), (per_config, len(entry.body))
    assert per_config < entry.nbytes  # what the cache counts is not an underestimate
    assert reader.cache.size == sum(reader.cached(f"s{i}", "prod").nbytes for i in range(count))
    assert api.get(URL.format("s0"), headers=key).json()["data"] == document
    assert api.get(URL.format("s0"), headers=key, params={"format": "dotenv"}).status_code == 200


def test_a_process_warms_its_cache_when_the_feed_connects(pg: Any, pg_url: str) -> None:
    from tests.conftest import eventually, make_api

    seeding = make_api(pg_url, pg)
    api = next(seeding)
    owner = api.person("owner@example.com")
    for i in range(30):
        api.put(URL.format(f"s{i}"), headers=owner, json={"data": {"N": i, "DB_PASSWORD": "pw"}})
    api.delete(URL.format("s29"), headers=owner)
    seeding.close()

    warmed = make_api(pg_url, pg, cache_warm=True)
    fresh = next(warmed)
    try:
        reader = fresh.app.state.runtime.reader
        assert eventually(lambda: len(reader.cache) == 29, 20)  # every live config, not s29
        entry = reader.cached("s7", "prod")
        assert entry.document == {"N": 7, "DB_PASSWORD": "pw"}  # secrets opened, as a load does
        assert entry.stored["DB_PASSWORD"] != "pw"  # and the sealed form kept for auditors
        loads = []
        load = reader.load
        reader.load = lambda s, e: loads.append((s, e)) or load(s, e)
        key = {"X-API-Key": fresh.key(owner, "s3")}
        assert fresh.get(URL.format("s3"), headers=key).json()["data"]["N"] == 3
        assert loads == []  # answered from the warm cache: no database read
    finally:
        warmed.close()


def test_warming_stops_at_the_bound_and_keeps_no_batch_a_change_overtook(pg_api: Api) -> None:
    api = pg_api
    owner = api.person("owner@example.com")
    for i in range(12):
        api.put(URL.format(f"s{i:02d}"), headers=owner, json={"data": {"N": i}})
    reader = api.app.state.runtime.reader
    entry_size = reader.load("s00", "prod").entry.nbytes
    reader.cache.clear()
    reader.cache.max_size = entry_size * 5
    assert reader.warm(batch=2) >= 5
    assert len(reader.cache) <= 6 and reader.cache.size <= entry_size * 6

    reader.cache.clear()
    reader.cache.max_size = 10**9
    generation_moves = reader.cache.invalidate  # a write lands while each batch is read
    original = reader._entry

    def entry_then_a_write(*args: Any) -> Any:
        made = original(*args)
        generation_moves(("elsewhere", "prod"))
        return made

    reader._entry = entry_then_a_write
    reader.warm(batch=4)
    assert len(reader.cache) == 0  # every batch was overtaken: none kept


def test_an_idle_change_feed_does_no_database_work_and_notices_a_killed_connection(
    pg: Any, pg_url: str
) -> None:
    """The listener asks the database nothing while nothing changes (TCP keepalives watch the
    connection), hears a NOTIFY at once, and when its connection is killed it says so (the
    caches go off) and connects again (they come back, emptied)."""
    import threading
    import time

    from sqlalchemy import text

    from configsync.feed import CHANNEL, ChangeFeed, ConfigMoved, encode
    from tests.conftest import eventually

    def listeners() -> list[Any]:
        with pg.connect() as conn:
            query = (
                "SELECT pid, query, state_change FROM pg_stat_activity "
                "WHERE application_name = 'configsync-change-feed'"
            )
            return [row for row in conn.execute(text(query)) if row.pid not in others]

    def listener() -> Any:
        found = listeners()
        return found[0] if len(found) == 1 else None

    others: set[int] = set()
    others = {row.pid for row in listeners()}  # feeds of other tests' apps, if still about
    heard: list[object] = []
    connects, drops = threading.Semaphore(0), threading.Semaphore(0)
    feed = ChangeFeed(pg_url, heard.append, connects.release, drops.release)
    feed.start()
    try:
        assert connects.acquire(timeout=10)

        before = eventually(listener)
        time.sleep(2.5)
        after = listener()
        assert after == before and after.query == f"LISTEN {CHANNEL}"  # no query since
        with pg.begin() as conn:
            message = ConfigMoved("pay", "prod", 3)
            conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": encode(message)})
        assert eventually(lambda: heard == [message], seconds=5)
        with pg.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": after.pid})
        assert drops.acquire(timeout=10) and not feed.connected.is_set()
        assert connects.acquire(timeout=10)
        assert eventually(lambda: (row := listener()) is not None and row.pid != after.pid)
    finally:
        feed.stop()
