"""The event store: expected versions, gapless order, immutability, the hash chain."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from configsync.db import make_session_factory
from configsync.domain.events import CONFIG_CHANGED
from configsync.errors import InvalidDocument, InvalidInput, VersionConflict
from configsync.events import (
    GENESIS_HASH,
    Alongside,
    NewEvent,
    StoredEvent,
    append,
    append_batch,
    read_after,
    read_stream,
    stream_version,
    verify_chain,
)
from configsync.events.canonical import canonical_json
from tests.conftest import scalar

ACTOR = {"actor": {"kind": "user", "id": "u1", "name": "a@example.com"}}


def _data(**changes: Any) -> dict[str, Any]:
    ops = [{"op": "add", "path": [k], "value": v} for k, v in changes.items()]
    return {"changes": ops, "reason": None, "rollback_of": None, "deleted": False}


def _append(sessions: sessionmaker[Session], stream: str, expected: int, **changes: Any) -> Any:
    with sessions() as s:
        event = append(s, stream, expected, _data(**changes), ACTOR, type=CONFIG_CHANGED)
        s.commit()
        return event


def test_append_assigns_versions_positions_and_chains_hashes(
    sessions: sessionmaker[Session],
) -> None:
    first = _append(sessions, "pay/prod", 0, A=1)
    second = _append(sessions, "pay/prod", 1, B=2)
    other = _append(sessions, "web/prod", 0, C=3)

    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert (first.position, second.position, other.position) == (1, 2, 3)
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash and other.prev_hash == second.hash
    assert len({first.hash, second.hash, other.hash}) == 3
    with sessions() as s:
        assert [e.version for e in read_stream(s, "pay/prod")] == [1, 2]
        assert [e.position for e in read_after(s, 1)] == [2, 3]
        assert verify_chain(s).ok


def test_stale_expected_version_is_rejected_and_appends_nothing(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    _append(sessions, "pay/prod", 0, A=1)
    _append(sessions, "pay/prod", 1, A=2)

    with sessions() as s, pytest.raises(VersionConflict) as caught:
        append(s, "pay/prod", 1, _data(A=3), ACTOR, type=CONFIG_CHANGED)
    assert (caught.value.expected, caught.value.actual) == (1, 2)
    assert "expected version 1" in caught.value.detail and "is 2" in caught.value.detail
    assert scalar(engine, "SELECT count(*) FROM events") == 2

    with sessions() as s, pytest.raises(VersionConflict):
        append(s, "new/prod", 3, _data(A=1), ACTOR, type=CONFIG_CHANGED)
    assert scalar(engine, "SELECT count(*) FROM events") == 2


def test_payloads_must_be_plain_json(sessions: sessionmaker[Session], engine: Engine) -> None:
    for bad in (
        {"changes": [], "x": float("nan")},
        {"changes": [], "x": {1: "int key"}},
        {"changes": [], "x": b"bytes"},
        {"changes": [], "x": "nul\x00"},
    ):
        with sessions() as s, pytest.raises(InvalidDocument):
            append(s, "pay/prod", 0, bad, ACTOR, type=CONFIG_CHANGED)
    assert scalar(engine, "SELECT count(*) FROM events") == 0


# Values that JSONB would rewrite (key order, 1.0 -> 1, 1e2 -> 100, -0.0 -> 0, precision).
AWKWARD_VALUES = {
    "z_last": 1,
    "a_first": 2,
    "one_point_zero": 1.0,
    "e_notation": 1e2,
    "negative_zero": -0.0,
    "huge": 1.7976931348623157e308,
    "tiny": 5e-324,
    "precise": 0.1 + 0.2,
    "big_int": 2**70,
    "neg_big_int": -(2**64) - 1,
    "unicode": "ünï€ødé 🎉",
    "nested": {"b": 1, "a": [1.0, -0.0]},
}


def test_stored_json_round_trips_exactly_and_the_chain_verifies(
    sessions: sessionmaker[Session],
) -> None:
    written = _append(sessions, "pay/prod", 0, **AWKWARD_VALUES)
    with sessions() as s:
        [read] = read_stream(s, "pay/prod")
        assert canonical_json(read.data) == canonical_json(written.data)
        values = {c["path"][0]: c["value"] for c in read.data["changes"]}
        assert isinstance(values["one_point_zero"], float) and isinstance(values["big_int"], int)
        assert str(values["negative_zero"]) == "-0.0"
        assert values["big_int"] == 2**70 and values["precise"] == 0.1 + 0.2
        assert read.recorded_at == written.recorded_at
        assert read.hash == written.hash
        assert verify_chain(s).ok


def test_update_and_delete_on_events_fail_in_the_database(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    _append(sessions, "pay/prod", 0, A=1)
    for statement in ("UPDATE events SET stream = 'x/y'", "DELETE FROM events"):
        with engine.connect() as conn, pytest.raises(DBAPIError, match="append-only"):
            conn.execute(text(statement))
    assert scalar(engine, "SELECT stream FROM events") == "pay/prod"


def test_truncate_on_events_fails_in_postgresql(pg: Engine) -> None:
    sessions = sessionmaker(bind=pg)
    _append(sessions, "pay/prod", 0, A=1)
    with pg.connect() as conn, pytest.raises(DBAPIError, match="append-only"):
        conn.execute(text("TRUNCATE events"))
    assert scalar(pg, "SELECT count(*) FROM events") == 1


def _tamper(engine: Engine, sql: str, **params: Any) -> None:
    """Alter the log behind the store's back, as a superuser who drops the guard first."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE events DISABLE TRIGGER events_no_update_or_delete"))
            conn.execute(text(sql), params)
            conn.execute(text("ALTER TABLE events ENABLE TRIGGER events_no_update_or_delete"))
    else:
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER events_no_update"))
            conn.execute(text(sql), params)


@pytest.mark.parametrize(
    ("tampering", "params"),
    [
        (
            "UPDATE events SET data = replace(data, :old, :new) WHERE position = 3",
            {"old": '"value":2', "new": '"value":3'},
        ),
        (
            "UPDATE events SET metadata = replace(metadata, :old, :new) WHERE position = 3",
            {"old": "a@example.com", "new": "b@example.com"},
        ),
        ("UPDATE events SET data = 'not json' WHERE position = 3", {}),
    ],
)
def test_verify_chain_names_the_first_altered_position(
    sessions: sessionmaker[Session], engine: Engine, tampering: str, params: dict[str, str]
) -> None:
    for i in range(5):
        _append(sessions, f"svc{i % 2}/prod", i // 2, **{f"K{i}": i})
    with sessions() as s:
        assert verify_chain(s).ok and verify_chain(s).checked == 5

    _tamper(engine, tampering, **params)

    with sessions() as s:
        report = verify_chain(s)
    assert not report.ok
    assert report.first_bad_position == 3
    assert report.checked == 2


def test_verify_chain_detects_a_recomputed_hash_that_breaks_the_link(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    for i in range(3):
        _append(sessions, "pay/prod", i, **{f"K{i}": i})
    # Rewriting a row's own hash to match its new content still breaks the next row's prev_hash.
    _tamper(engine, f"UPDATE events SET hash = '{'f' * 64}' WHERE position = 2")
    with sessions() as s:
        assert verify_chain(s).first_bad_position == 2


def _race(target: Any, count: int) -> list[Any]:
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_twenty_writers_with_the_same_expected_version_exactly_one_wins(pg: Engine) -> None:
    sessions = sessionmaker(bind=pg)
    _append(sessions, "pay/prod", 0, A=0)

    results = _race(lambda i: _append(sessions, "pay/prod", 1, **{f"W{i}": i}), 20)

    winners = [r for r in results if not isinstance(r, Exception)]
    losers = [r for r in results if isinstance(r, Exception)]
    assert len(winners) == 1
    assert all(isinstance(r, VersionConflict) for r in losers) and len(losers) == 19
    assert scalar(pg, "SELECT count(*) FROM events") == 2
    assert scalar(pg, "SELECT string_agg(version::text, ',' ORDER BY version) FROM events") == "1,2"
    assert (
        scalar(pg, "SELECT string_agg(position::text, ',' ORDER BY position) FROM events") == "1,2"
    )
    with sessions() as s:
        assert verify_chain(s).ok


def test_twenty_writers_on_twenty_streams_all_succeed_gapless(pg: Engine) -> None:
    sessions = sessionmaker(bind=pg)

    results = _race(lambda i: _append(sessions, f"svc{i}/prod", 0, A=i), 20)

    assert not [r for r in results if isinstance(r, Exception)]
    positions = sorted(r.position for r in results)
    assert positions == list(range(1, 21))
    with sessions() as s:
        assert [e.position for e in read_after(s, 0, 100)] == list(range(1, 21))
        assert all(stream_version(s, f"svc{i}/prod") == 1 for i in range(20))
        report = verify_chain(s)
    assert report.ok and report.checked == 20


def test_reading_a_stream_up_to_a_version_or_an_instant(sessions: sessionmaker[Session]) -> None:
    events = [_append(sessions, "pay/prod", i, **{f"K{i}": i}) for i in range(4)]
    with sessions() as s:
        assert [e.version for e in read_stream(s, "pay/prod", up_to_version=2)] == [1, 2]
        until = events[2].recorded_at
        assert [e.version for e in read_stream(s, "pay/prod", until=until)] == [1, 2, 3]
        assert read_stream(s, "nothing/here") == []


def test_recorded_at_never_goes_backwards(sessions: sessionmaker[Session]) -> None:
    events = [_append(sessions, f"s{i}/prod", 0, A=i) for i in range(10)]
    stamps = [e.recorded_at for e in events]
    assert stamps == sorted(stamps)


def test_a_batch_appends_in_order_and_a_stale_item_fails_alone(
    sessions: sessionmaker[Session],
) -> None:
    _append(sessions, "pay/prod", 0, A=1)
    batch = [
        NewEvent("web/prod", 0, _data(B=1), ACTOR, type=CONFIG_CHANGED),
        NewEvent(
            "pay/prod", 0, _data(C=1), ACTOR, type=CONFIG_CHANGED
        ),  # stale: pay/prod is at version 1
        NewEvent(
            "web/prod", 1, _data(D=1), ACTOR, type=CONFIG_CHANGED
        ),  # expects the version made just above
        NewEvent("pay/prod", 1, _data(E=1), ACTOR, type=CONFIG_CHANGED),
    ]
    with sessions() as s:
        outcomes = append_batch(s, batch)
        s.commit()

    first, stale, second, third = outcomes
    assert isinstance(stale, VersionConflict)
    assert stale.extra == {"expected_version": 0, "current_version": 1}
    assert [(e.stream, e.version, e.position) for e in (first, second, third)] == [
        ("web/prod", 1, 2),
        ("web/prod", 2, 3),
        ("pay/prod", 2, 4),
    ]
    assert second.prev_hash == first.hash and third.prev_hash == second.hash
    with sessions() as s:
        assert [e.data for e in read_stream(s, "web/prod")] == [_data(B=1), _data(D=1)]
        assert [e.data for e in read_stream(s, "pay/prod")] == [_data(A=1), _data(E=1)]
        assert [e.position for e in read_after(s, 0)] == [1, 2, 3, 4]
        assert verify_chain(s).ok


def test_new_events_are_checked_when_made(sessions: sessionmaker[Session]) -> None:
    # Made in the writer's thread, before any batch: a bad one never reaches a transaction.
    with pytest.raises(InvalidDocument):
        NewEvent("web/prod", 0, {"bad": float("nan")}, ACTOR, type=CONFIG_CHANGED)
    for stream, expected, type_ in (
        ("web prod", 0, "ConfigChanged"),
        ("web/prod", -1, "ConfigChanged"),
        ("web/prod", 0, "T" * 65),  # longer than the column holds
        ("w" * 161, 0, "ConfigChanged"),
    ):
        with pytest.raises(InvalidInput):
            NewEvent(stream, expected, _data(A=1), ACTOR, type=type_)
    with sessions() as s:
        event = append(s, "web/prod", 0, _data(A=1), ACTOR, type="T" * 64)
        s.commit()
    assert event.type == "T" * 64


def test_statements_alongside_an_append_run_once_on_the_events_appended(pg: Engine) -> None:
    """An Alongside statement runs in the append's own round trip, once, and reads the
    append's rows: an item whose expected version was stale appended nothing and has no
    position there."""
    sessions = make_session_factory(pg)
    _append(sessions, "pay/prod", 0, A=1)
    seen = Alongside(
        "INSERT INTO alongside_seen SELECT a.o_index, a.o_position, a.o_hash FROM appended a"
        " JOIN unnest(%s::integer[]) AS wanted(n) ON wanted.n = a.o_index"
        " WHERE a.o_position IS NOT NULL RETURNING 1",
        ([1, 2, 3],),
    )
    batch = [
        NewEvent("web/prod", 0, _data(B=1), ACTOR, type=CONFIG_CHANGED),
        NewEvent("pay/prod", 0, _data(C=1), ACTOR, type=CONFIG_CHANGED),  # stale
        NewEvent("web/prod", 1, _data(D=1), ACTOR, type=CONFIG_CHANGED),
    ]
    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    with pg.begin() as conn:
        conn.execute(text("CREATE TABLE alongside_seen (n integer, position bigint, hash text)"))
    try:
        event.listen(pg, "before_cursor_execute", listener)
        try:
            with sessions() as s:
                first, stale, second = append_batch(s, batch, [seen])
                s.commit()
        finally:
            event.remove(pg, "before_cursor_execute", listener)
        with pg.connect() as conn:
            rows = conn.execute(text("SELECT n, position, hash FROM alongside_seen ORDER BY n"))
            seen_rows = [tuple(r) for r in rows]
    finally:
        with pg.begin() as conn:
            conn.execute(text("DROP TABLE alongside_seen"))
    assert isinstance(stale, VersionConflict)
    assert isinstance(first, StoredEvent) and isinstance(second, StoredEvent)
    assert len(statements) == 1 and "alongside_seen" in statements[0], statements
    assert seen_rows == [(1, first.position, first.hash), (3, second.position, second.hash)]


def test_statements_alongside_an_append_need_postgresql(sqlite: Engine) -> None:
    with make_session_factory(sqlite)() as s, pytest.raises(ValueError, match="PostgreSQL"):
        append_batch(
            s,
            [NewEvent("web/prod", 0, _data(B=1), ACTOR, type=CONFIG_CHANGED)],
            [Alongside("SELECT 1", ())],
        )
    assert scalar(sqlite, "SELECT count(*) FROM events") == 0
