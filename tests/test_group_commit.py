"""Group commit: concurrent appends share transactions, and each keeps its own outcome."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from configsync.configs.commands import ReadyWrite, record
from configsync.db import make_engine, make_session_factory
from configsync.domain.events import CONFIG_CHANGED
from configsync.errors import AlreadyExists, VersionConflict
from configsync.events import NewEvent, StoredEvent, append_batch, read_after, verify_chain
from configsync.events.canonical import canonical_json
from configsync.events.group import GroupCommit
from tests.conftest import Api, eventually, scalar

ACTOR = {"actor": {"kind": "user", "id": "u1", "name": "a@example.com"}}
Appends = GroupCommit[NewEvent, StoredEvent]


def _data(counter: int) -> dict[str, Any]:
    changes = [{"op": "add", "path": ["COUNTER"], "value": counter}]
    return {"changes": changes, "reason": None, "rollback_of": None, "deleted": False}


@pytest.fixture
def commit_sessions(pg: Engine, pg_url: str) -> Iterator[sessionmaker[Session]]:
    """A pool of one connection, as the app gives its group commit."""
    engine = make_engine(pg_url, pool_size=1, max_overflow=0, pool_pre_ping=False)
    yield make_session_factory(engine)
    engine.dispose()


def _held_first_batch(
    sessions: sessionmaker[Session],
    work: Callable[[Session, Sequence[NewEvent]], Any],
    until_waiting: int,
) -> tuple[Appends, threading.Event]:
    """A group whose first batch waits until `until_waiting` items queue behind it.

    That makes the second batch hold exactly those items, whatever the threads' timing. The
    event is set once the first batch is being held.
    """
    first = threading.Event()

    def held(session: Session, items: Sequence[NewEvent]) -> Any:
        if not first.is_set():
            first.set()
            deadline = time.monotonic() + 10
            while group.waiting < until_waiting and time.monotonic() < deadline:
                time.sleep(0.002)
        return work(session, items)

    group: Appends = GroupCommit(sessions, held)
    return group, first


def _submit_behind_a_held_batch(
    group: Appends, holding: threading.Event, items: list[NewEvent]
) -> list[StoredEvent | Exception]:
    """Submit `items` while a first batch (of another item) is held: they make one batch."""
    with ThreadPoolExecutor(max_workers=1) as lead:
        first = lead.submit(
            group.submit, NewEvent("lead/prod", 0, _data(0), ACTOR, type=CONFIG_CHANGED)
        )
        assert holding.wait(5)
        outcomes = _submit_all(group, items)
        assert first.result().stream == "lead/prod"
    return outcomes


def _submit_all(group: Appends, items: list[NewEvent]) -> list[StoredEvent | Exception]:
    def one(item: NewEvent) -> StoredEvent | Exception:
        try:
            return group.submit(item)
        except Exception as error:
            return error

    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(one, items))


def test_concurrent_appends_share_commits_and_stay_gapless(
    pg: Engine, commit_sessions: sessionmaker[Session]
) -> None:
    writers, per_writer = 16, 20
    group, _ = _held_first_batch(commit_sessions, append_batch, until_waiting=writers - 1)

    def writer(w: int) -> list[int]:
        stream, expected, versions = f"svc-{w}/prod", 0, []
        for i in range(per_writer):
            event = group.submit(NewEvent(stream, expected, _data(i), ACTOR, type=CONFIG_CHANGED))
            expected = event.version
            versions.append(event.version)
        return versions

    with ThreadPoolExecutor(max_workers=writers) as pool:
        results = list(pool.map(writer, range(writers)))

    total = writers * per_writer
    assert results == [list(range(1, per_writer + 1))] * writers
    assert group.items == total
    assert group.largest_batch >= writers - 1  # the held first batch let the others queue
    assert group.transactions < total
    with make_session_factory(pg)() as s:
        assert [e.position for e in read_after(s, 0)] == list(range(1, total + 1))
        assert verify_chain(s).ok


def test_a_batch_holds_one_item_per_key_and_the_others_wait_in_order(
    commit_sessions: sessionmaker[Session],
) -> None:
    """Config writes are keyed by stream: a write is decided against the state the write before
    it to the same stream committed, so two of one stream never share a batch."""
    batches: list[list[tuple[str, int]]] = []
    first, release = threading.Event(), threading.Event()

    def work(_session: Session, items: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
        if not first.is_set():
            first.set()
            release.wait(10)  # until every item has queued behind this batch
        batches.append(list(items))
        return list(items)

    group: GroupCommit[tuple[str, int], tuple[str, int]] = GroupCommit(
        commit_sessions, work, key=lambda item: item[0]
    )
    queued = [("a", 1), ("a", 2), ("b", 1), ("a", 3), ("b", 2)]
    with ThreadPoolExecutor(max_workers=1 + len(queued)) as pool:
        lead = pool.submit(group.submit, ("lead", 0))
        assert first.wait(5)
        outcomes = []
        for count, item in enumerate(queued, start=1):  # one at a time: the queue's order
            outcomes.append(pool.submit(group.submit, item))
            assert eventually(lambda count=count: group.waiting == count, seconds=5)
        release.set()
        assert lead.result() == ("lead", 0)
        assert [outcome.result() for outcome in outcomes] == queued
    assert batches == [
        [("lead", 0)],
        [("a", 1), ("b", 1)],
        [("a", 2), ("b", 2)],
        [("a", 3)],
    ]


def test_a_lone_writer_commits_at_once_and_is_durable_on_return(
    pg: Engine, commit_sessions: sessionmaker[Session]
) -> None:
    group: Appends = GroupCommit(commit_sessions, append_batch)
    for version in range(5):
        event = group.submit(
            NewEvent("pay/prod", version, _data(version), ACTOR, type=CONFIG_CHANGED)
        )
        # Another connection sees it at once: submit returns after the commit, not before.
        assert scalar(pg, "SELECT max(position) FROM events") == event.position
    assert (group.transactions, group.items) == (5, 5)


def test_a_stale_item_fails_alone_and_its_batch_commits(
    pg: Engine, commit_sessions: sessionmaker[Session]
) -> None:
    with make_session_factory(pg)() as s:
        append_batch(s, [NewEvent("pay/prod", 0, _data(0), ACTOR, type=CONFIG_CHANGED)])
        s.commit()
    group, holding = _held_first_batch(commit_sessions, append_batch, until_waiting=4)
    items = [
        NewEvent("web/prod", 0, _data(1), ACTOR, type=CONFIG_CHANGED),
        NewEvent("pay/prod", 0, _data(2), ACTOR, type=CONFIG_CHANGED),  # stale
        NewEvent("api/prod", 0, _data(3), ACTOR, type=CONFIG_CHANGED),
        NewEvent("ops/prod", 0, _data(4), ACTOR, type=CONFIG_CHANGED),
    ]
    outcomes = _submit_behind_a_held_batch(group, holding, items)

    stale = [o for o in outcomes if isinstance(o, VersionConflict)]
    assert len(stale) == 1 and stale[0].extra["current_version"] == 1
    assert sorted(o.stream for o in outcomes if isinstance(o, StoredEvent)) == [
        "api/prod",
        "ops/prod",
        "web/prod",
    ]
    assert group.transactions == 2  # the held one, then all four together: none was run again
    assert scalar(pg, "SELECT count(*) FROM events") == 5


class Broken(Exception):
    pass


def test_an_item_that_breaks_its_batch_is_run_alone_so_the_others_commit(
    pg: Engine, commit_sessions: sessionmaker[Session]
) -> None:
    def append_or_break(session: Session, items: Sequence[NewEvent]) -> Any:
        outcomes = append_batch(session, items)  # appended, then undone by the failure below
        if any(item.stream == "api/prod" for item in items):
            raise Broken("api/prod breaks any transaction it is in")
        return outcomes

    group, holding = _held_first_batch(commit_sessions, append_or_break, until_waiting=4)
    items = [
        NewEvent(f"{name}/prod", 0, _data(1), ACTOR, type=CONFIG_CHANGED)
        for name in ("web", "pay", "api", "ops")
    ]
    outcomes = _submit_behind_a_held_batch(group, holding, items)

    failed = [o for o in outcomes if isinstance(o, Exception)]
    assert len(failed) == 1 and isinstance(failed[0], Broken)
    assert sorted(o.stream for o in outcomes if isinstance(o, StoredEvent)) == [
        "ops/prod",
        "pay/prod",
        "web/prod",
    ]
    assert group.transactions == 2 + len(items)  # the held one, the broken one, each item alone
    assert scalar(pg, "SELECT count(*) FROM events") == 1 + 3
    with make_session_factory(pg)() as s:
        assert verify_chain(s).ok


@pytest.fixture
def refused_at_commit(pg: Engine) -> Iterator[str]:
    """A table whose rows are refused only at commit (a deferred constraint trigger)."""
    with pg.begin() as conn:
        conn.execute(text("CREATE TABLE commit_probe (x integer)"))
        conn.execute(
            text(
                "CREATE FUNCTION commit_probe_refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE CONSTRAINT TRIGGER commit_probe_refuse AFTER INSERT ON commit_probe "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
                "EXECUTE FUNCTION commit_probe_refuse()"
            )
        )
    yield "commit_probe"
    with pg.begin() as conn:
        conn.execute(text("DROP TABLE commit_probe"))
        conn.execute(text("DROP FUNCTION commit_probe_refuse()"))


def test_a_failed_commit_fails_every_item_of_its_batch_and_runs_none_again(
    pg: Engine, commit_sessions: sessionmaker[Session], refused_at_commit: str
) -> None:
    # Once a commit has failed, whether it happened is not known to the client: running the
    # items again could append them twice, so each writer gets the error instead.
    def append_and_probe(session: Session, items: Sequence[NewEvent]) -> Any:
        outcomes = append_batch(session, items)
        if any(item.stream == "bad/prod" for item in items):
            session.execute(text(f"INSERT INTO {refused_at_commit} VALUES (1)"))
        return outcomes

    group, holding = _held_first_batch(commit_sessions, append_and_probe, until_waiting=3)
    items = [
        NewEvent(f"{name}/prod", 0, _data(1), ACTOR, type=CONFIG_CHANGED)
        for name in ("a", "bad", "c")
    ]
    outcomes = _submit_behind_a_held_batch(group, holding, items)

    assert all(isinstance(o, DBAPIError) and "refused at commit" in str(o) for o in outcomes)
    assert group.transactions == 2  # the held one, then the failed one: nothing was run again
    assert scalar(pg, "SELECT count(*) FROM events") == 1


def _ready(service: str, owner: str | None, *, expected: int = 0) -> ReadyWrite:
    document = {"COUNTER": 1}
    changes = [{"op": "add", "path": ["COUNTER"], "value": 1}]
    data = {"action": "created", "changes": changes, "reason": None, "rollback_of": None}
    return ReadyWrite(
        event=NewEvent(
            f"{service}/prod", expected, {**data, "deleted": False}, ACTOR, type=CONFIG_CHANGED
        ),
        document_json=canonical_json(document),
        creates_service=True,
        owner_id=owner,
    )


def test_a_write_that_lost_the_race_to_create_its_service_is_refused(
    engine: Engine,
) -> None:
    # Both writers were authorized while the service did not exist; only the first may make it.
    with engine.begin() as conn:
        for person in ("alice", "bob"):
            conn.execute(
                text(
                    "INSERT INTO users (id, email, password_hash, role, is_active, created_at) "
                    "VALUES (:id, :email, 'x', 'user', true, CURRENT_TIMESTAMP)"
                ),
                {"id": person, "email": f"{person}@example.com"},
            )
    with make_session_factory(engine)() as s:
        first, second = record(s, [_ready("pay", "alice"), _ready("pay", "bob")])
        s.commit()

    assert isinstance(first, StoredEvent) and first.stream == "pay/prod"
    assert isinstance(second, AlreadyExists)
    assert scalar(engine, "SELECT owner_id FROM services WHERE name = 'pay'") == "alice"
    assert scalar(engine, "SELECT count(*) FROM events") == 1
    assert scalar(engine, "SELECT version FROM config_current WHERE service = 'pay'") == 1


def test_a_listener_that_fails_does_not_fail_a_write_the_group_made_durable(
    pg_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write path's listeners hear of a group write after its commit: one that fails (a
    broker on fire) is logged, and the writer is told of its write, which reads back at once."""
    from configsync.tasks import Dispatcher

    def on_fire(_self: Any, _event: StoredEvent) -> None:
        raise RuntimeError("the broker is on fire")

    owner = pg_api.person("owner@example.com")
    assert (
        pg_api.put("/v1/configs/pay/prod", headers=owner, json={"data": {"A": 1}}).status_code
        == 201
    )
    reader = {"X-API-Key": pg_api.key(owner, "pay")}
    assert pg_api.get("/v1/configs/pay/prod", headers=reader).json()["data"] == {"A": 1}
    monkeypatch.setattr(Dispatcher, "__call__", on_fire)
    written = pg_api.put("/v1/configs/pay/prod", headers=owner, json={"data": {"A": 2}})
    assert written.status_code == 200 and written.json()["version"] == 2
    assert pg_api.events() == 2
    assert pg_api.get("/v1/configs/pay/prod", headers=reader).json()["data"] == {"A": 2}


def test_api_writes_on_postgresql_go_through_the_group_commit(pg_api: Api) -> None:
    group = pg_api.app.state.runtime.group
    owner = pg_api.person("owner@example.com")
    shared_writes, own_writes = 8, 8

    def put(i: int) -> int:
        # Half the writers share one config (no If-Match: last write wins, one after another
        # under the stream lock); the others each write their own.
        path = "/v1/configs/pay/prod" if i < shared_writes else f"/v1/configs/svc{i}/prod"
        response = pg_api.client.put(path, headers=owner, json={"data": {"N": i}})
        return response.status_code

    with ThreadPoolExecutor(max_workers=shared_writes + own_writes) as pool:
        statuses = list(pool.map(put, range(shared_writes + own_writes)))

    assert sorted(statuses) == [200] * (shared_writes - 1) + [201] * (own_writes + 1)
    assert group.items == shared_writes + own_writes
    shared = pg_api.client.get("/v1/configs/pay/prod", headers=owner)
    assert shared.json()["version"] == shared_writes
    assert pg_api.events() == shared_writes + own_writes
    assert scalar(pg_api.engine, "SELECT count(*) FROM services") == own_writes + 1
    verified = pg_api.client.get("/v1/audit/verify", headers=pg_api.person("a@x.io", "admin"))
    assert verified.status_code == 200, verified.text


def test_a_batch_that_finds_its_connection_dead_runs_again_on_a_new_one(
    pg: Engine, pg_url: str
) -> None:
    # The group's connection is not pinged before each batch; a server restart or an idle
    # timeout in between must still not fail a write.
    backends: list[int] = []

    def append_noting_backend(session: Session, items: Sequence[NewEvent]) -> Any:
        outcomes = append_batch(session, items)
        backends.append(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
        return outcomes

    group = GroupCommit.for_database(pg_url, append_noting_backend)
    try:
        group.submit(NewEvent("pay/prod", 0, _data(0), ACTOR, type=CONFIG_CHANGED))
        assert scalar(pg, "SELECT pg_terminate_backend(:pid)", pid=backends[0])
        eventually(
            lambda: (
                not scalar(
                    pg, "SELECT count(*) FROM pg_stat_activity WHERE pid = :pid", pid=backends[0]
                )
            )
        )

        event = group.submit(NewEvent("pay/prod", 1, _data(1), ACTOR, type=CONFIG_CHANGED))

        assert event.version == 2
        assert (
            group.transactions == 3
        )  # the first, the one that found the dead connection, its rerun
        assert backends[-1] != backends[0]
    finally:
        group.close()


def test_writers_that_do_not_wait_share_batches_with_those_that_do(
    pg: Engine, commit_sessions: sessionmaker[Session]
) -> None:
    """submit_async: the outcome goes to a callback, a batch such a writer is to lead runs on
    the group's leader thread, and every writer, waiting or not, gets its own outcome, gapless,
    whoever leads whose batch."""
    group, holding = _held_first_batch(commit_sessions, append_batch, until_waiting=12)
    outcomes: dict[str, StoredEvent | BaseException] = {}
    threads: dict[str, str] = {}
    done = threading.Semaphore(0)

    def callback(stream: str) -> Callable[[StoredEvent | BaseException], None]:
        def on_done(outcome: StoredEvent | BaseException) -> None:
            outcomes[stream] = outcome
            threads[stream] = threading.current_thread().name
            done.release()

        return on_done

    def event(stream: str, expected: int = 0) -> NewEvent:
        return NewEvent(stream, expected, _data(1), ACTOR, type=CONFIG_CHANGED)

    group.submit_async(event("first/prod"), callback("first/prod"))  # leads, on the leader
    assert holding.wait(5)
    for n in range(8):  # queued behind it, no thread waiting
        group.submit_async(event(f"async-{n}/prod"), callback(f"async-{n}/prod"))
    stale = event("async-0/prod", expected=5)  # same stream: a later batch, and stale
    group.submit_async(stale, callback("stale"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        waited = list(pool.map(group.submit, [event(f"sync-{n}/prod") for n in range(4)]))
    for _ in range(10):
        assert done.acquire(timeout=10)
    assert isinstance(outcomes.pop("stale"), VersionConflict)
    assert all(isinstance(o, StoredEvent) for o in outcomes.values()), outcomes
    assert threads["first/prod"].startswith("configsync-group")
    positions = sorted([o.position for o in outcomes.values()] + [e.position for e in waited])  # type: ignore[union-attr]
    assert positions == list(range(1, 14))
    assert group.largest_batch >= 12
    group.close()
    with make_session_factory(pg)() as s:
        assert verify_chain(s).ok
