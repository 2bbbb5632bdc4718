"""Long polls: GET with If-None-Match and ?wait= answers when the version moves, or 304."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.conftest import Api, eventually, make_api

URL = "/v1/configs/pay/prod"


def _timed_get(api: Api, path: str, headers: dict[str, str]) -> tuple[Any, float]:
    began = time.monotonic()
    response = api.get(path, headers=headers)
    return response, time.monotonic() - began


def _write_later(
    api: Api, headers: dict[str, str], doc: dict[str, Any], delay: float
) -> threading.Thread:
    def write() -> None:
        time.sleep(delay)
        assert api.put(URL, headers=headers, json={"data": doc}).status_code == 200

    thread = threading.Thread(target=write)
    thread.start()
    return thread


@pytest.fixture
def other_process(pg_api: Api, pg: Engine) -> Iterator[Api]:
    yield from make_api(pg_api.url, pg)


def test_a_long_poll_is_woken_by_a_write_in_another_process(
    pg_api: Api, other_process: Api
) -> None:
    owner = pg_api.person("owner@example.com")
    pg_api.put(URL, headers=owner, json={"data": {"A": 1}})
    key = {"X-API-Key": pg_api.key(owner, "pay")}
    writer = _write_later(other_process, owner, {"A": 2}, delay=0.5)
    response, took = _timed_get(pg_api, URL + "?wait=20", {**key, "If-None-Match": '"1"'})
    writer.join()
    assert response.status_code == 200 and response.json()["version"] == 2
    assert response.headers["etag"] == '"2"'
    assert 0.4 < took < 5


def test_a_long_poll_that_sees_no_change_ends_with_304(pg_api: Api) -> None:
    owner = pg_api.person("owner@example.com")
    pg_api.put(URL, headers=owner, json={"data": {"A": 1}})
    response, took = _timed_get(pg_api, URL + "?wait=1", {**owner, "If-None-Match": '"1"'})
    assert response.status_code == 304 and response.headers["etag"] == '"1"'
    assert 0.9 < took < 3


def test_wait_without_an_etag_or_behind_the_current_version_answers_at_once(pg_api: Api) -> None:
    owner = pg_api.person("owner@example.com")
    pg_api.put(URL, headers=owner, json={"data": {"A": 1}})
    pg_api.put(URL, headers=owner, json={"data": {"A": 2}})
    plain, took = _timed_get(pg_api, URL + "?wait=10", owner)
    assert plain.status_code == 200 and took < 1
    behind, took = _timed_get(pg_api, URL + "?wait=10", {**owner, "If-None-Match": '"1"'})
    assert behind.status_code == 200 and behind.json()["version"] == 2 and took < 1
    assert pg_api.get(URL + "?wait=-1", headers=owner).status_code == 422


def test_the_wait_is_capped_by_the_setting(pg: Engine, pg_url: str) -> None:
    api = next(make_api(pg_url, pg, max_wait_seconds=0.5))
    owner = api.person("owner@example.com")
    api.put(URL, headers=owner, json={"data": {"A": 1}})
    response, took = _timed_get(api, URL + "?wait=60", {**owner, "If-None-Match": '"1"'})
    assert response.status_code == 304 and took < 2


def test_a_long_poll_on_the_embedded_database_sees_a_write(sqlite_api: Api) -> None:
    owner = sqlite_api.person("owner@example.com")
    sqlite_api.put(URL, headers=owner, json={"data": {"A": 1}})
    writer = _write_later(sqlite_api, owner, {"A": 2}, delay=0.3)
    response, took = _timed_get(sqlite_api, URL + "?wait=10", {**owner, "If-None-Match": '"1"'})
    writer.join()
    assert response.status_code == 200 and response.json()["version"] == 2
    assert took < 3


def _warm(api: Api, headers: dict[str, str]) -> None:
    """Read once so that this process's cache holds the config (trusted while the feed is up)."""
    assert api.get(URL, headers=headers).status_code == 200
    assert api.app.state.config_reader.cached("pay", "prod") is not None


def test_a_long_poll_on_a_warm_cache_waits_the_whole_wait(pg_api: Api) -> None:
    owner = pg_api.person("owner@example.com")
    pg_api.put(URL, headers=owner, json={"data": {"A": 1}})
    key = {"X-API-Key": pg_api.key(owner, "pay")}
    _warm(pg_api, key)
    response, took = _timed_get(pg_api, URL + "?wait=3", {**key, "If-None-Match": '"1"'})
    assert response.status_code == 304 and response.headers["etag"] == '"1"'
    assert 2.9 < took < 4.5


def _wakes_soon_after_the_commit(poller: Api, writer: Api, owner: dict[str, str]) -> None:
    """A write 1 s into a 10 s wait answers the poll with the new version within 200 ms."""
    done: dict[str, float] = {}

    def write() -> None:
        time.sleep(1.0)
        response = writer.put(URL, headers=owner, json={"data": {"A": 2}})
        done["write"] = time.monotonic()  # the write has committed before its answer starts
        assert response.status_code == 200

    thread = threading.Thread(target=write)
    thread.start()
    response, took = _timed_get(poller, URL + "?wait=10", {**owner, "If-None-Match": '"1"'})
    done["poll"] = time.monotonic()
    thread.join()
    assert response.status_code == 200 and response.json()["version"] == 2
    assert 0.9 < took < 3
    assert done["poll"] - done["write"] < 0.2


def test_a_write_in_the_same_process_wakes_a_warm_long_poll_at_once(pg_api: Api) -> None:
    owner = pg_api.person("owner@example.com")
    pg_api.put(URL, headers=owner, json={"data": {"A": 1}})
    _warm(pg_api, owner)
    _wakes_soon_after_the_commit(pg_api, pg_api, owner)


def test_a_write_in_another_process_wakes_a_warm_long_poll_at_once(
    pg_api: Api, other_process: Api
) -> None:
    owner = pg_api.person("owner@example.com")
    pg_api.put(URL, headers=owner, json={"data": {"A": 1}})
    _warm(pg_api, owner)
    _wakes_soon_after_the_commit(pg_api, other_process, owner)


def test_a_write_wakes_an_embedded_long_poll_without_waiting_for_a_timer(
    sqlite_api: Api,
) -> None:
    owner = sqlite_api.person("owner@example.com")
    sqlite_api.put(URL, headers=owner, json={"data": {"A": 1}})
    _wakes_soon_after_the_commit(sqlite_api, sqlite_api, owner)
    response, took = _timed_get(sqlite_api, URL + "?wait=2", {**owner, "If-None-Match": '"2"'})
    assert response.status_code == 304 and 1.9 < took < 3.5


def _count_loads(api: Api) -> list[tuple[str, str]]:
    """Every database read of a current config the reader makes from now on."""
    reader = api.app.state.runtime.reader
    calls: list[tuple[str, str]] = []
    load = reader.load

    def counted(service: str, environment: str) -> Any:
        calls.append((service, environment))
        return load(service, environment)

    reader.load = counted
    return calls


def _polls(
    api: Api, headers: dict[str, str], count: int, wait: float
) -> tuple[list[Any], list[threading.Thread]]:
    """`count` long polls at once, each in its own thread; their answers, once all are in."""
    answers: list[Any] = []

    def poll() -> None:
        answers.append(api.get(URL + f"?wait={wait}", headers=headers))

    threads = [threading.Thread(target=poll) for _ in range(count)]
    for thread in threads:
        thread.start()
    return answers, threads


def test_the_waiters_of_a_config_share_one_read_when_woken(pg_api: Api) -> None:
    owner = pg_api.person("owner@example.com")
    pg_api.put(URL, headers=owner, json={"data": {"A": 1}})
    key = {"X-API-Key": pg_api.key(owner, "pay")}
    _warm(pg_api, key)
    waiters = pg_api.app.state.runtime.reader.waiters
    loads = _count_loads(pg_api)
    answers, threads = _polls(pg_api, {**key, "If-None-Match": '"1"'}, 12, 20)
    assert eventually(lambda: sum(len(w) for w in waiters._waiting.values()) == 12, 10)
    assert loads == []  # the warm cache answered their first look
    assert pg_api.put(URL, headers=owner, json={"data": {"A": 2}}).status_code == 200
    for thread in threads:
        thread.join(30)
    assert [a.status_code for a in answers] == [200] * 12
    assert {a.json()["version"] for a in answers} == {2}
    assert loads == [("pay", "prod")]  # one read for the twelve


def test_idle_waiters_do_no_database_work(pg_api: Api) -> None:
    owner = pg_api.person("owner@example.com")
    pg_api.put(URL, headers=owner, json={"data": {"A": 1}})
    key = {"X-API-Key": pg_api.key(owner, "pay")}
    _warm(pg_api, key)
    loads = _count_loads(pg_api)
    answers, threads = _polls(pg_api, {**key, "If-None-Match": '"1"'}, 5, 5)
    for thread in threads:
        thread.join(30)
    assert [a.status_code for a in answers] == [304] * 5
    assert loads == []  # five waiters, five seconds: not one read (before: one each per 2 s)


def test_a_feed_that_reconnects_wakes_every_waiter(pg_api: Api, other_process: Api) -> None:
    owner = pg_api.person("owner@example.com")
    pg_api.put(URL, headers=owner, json={"data": {"A": 1}})
    key = {"X-API-Key": pg_api.key(owner, "pay")}
    _warm(pg_api, key)
    runtime = pg_api.app.state.runtime
    answers, threads = _polls(pg_api, {**key, "If-None-Match": '"1"'}, 3, 20)
    waiters = runtime.reader.waiters
    assert eventually(lambda: sum(len(w) for w in waiters._waiting.values()) == 3, 10)
    runtime.reader.changed = lambda _message: None  # the change's message is lost on the way
    assert other_process.put(URL, headers=owner, json={"data": {"A": 2}}).status_code == 200
    time.sleep(1.0)
    assert all(thread.is_alive() for thread in threads)  # nobody heard of it, nobody polls
    runtime.trust_caches(True)  # the feed reconnected: every waiter looks again
    for thread in threads:
        thread.join(10)
    assert [a.status_code for a in answers] == [200] * 3


def test_a_waiter_whose_client_left_is_gone_at_once(tmp_path: Any, pg_url: str, pg: Engine) -> None:
    import socket

    import httpx

    from tests.conftest import PASSWORD, clean_env, running_server
    from tests.test_metrics import samples, total

    env = clean_env(DATABASE_URL=pg_url, SECRET_KEY="k" * 48, CONFIGSYNC_AUDIT_LOG="a.log")
    with running_server(tmp_path, env) as server:
        httpx.post(server + "/auth/signup", json={"email": "o@example.com", "password": PASSWORD})
        token = httpx.post(
            server + "/auth/login", json={"email": "o@example.com", "password": PASSWORD}
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        httpx.put(server + URL, headers=auth, json={"data": {"A": 1}}).raise_for_status()

        def waiting() -> float:
            return total(
                samples(httpx.get(server + "/metrics").text), "configsync_long_poll_waiters"
            )

        port = int(server.rsplit(":", 1)[1])
        clients = []
        for _ in range(3):  # the first may go the slow way; the others find the cache warm
            client = socket.create_connection(("127.0.0.1", port))
            client.sendall(
                f"GET {URL}?wait=60 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                'If-None-Match: "1"\r\n\r\n'.encode()
            )
            clients.append(client)
        assert eventually(lambda: waiting() == 3, 10)
        for client in clients:
            client.close()  # the services went away (a deploy, a crash)
        assert eventually(lambda: waiting() == 0, 5)  # not after the 60 s wait


def test_the_registry_wakes_its_waiters_from_another_thread_in_one_loop_callback() -> None:
    """10,000 waiters woken by the change feed's thread: one hand-over to the event loop (not one
    each), every waiter woken (with a fetch: one fetch, its result handed to each), a wake
    between two waits kept for the next, a timeout and a departed client told apart from a
    wake, and nobody left registered."""
    import asyncio

    from configsync.configs.waiters import Waiters

    waiters = Waiters()
    key = ("pay", "prod")

    async def run() -> None:
        loop = asyncio.get_running_loop()
        handed: list[object] = []
        real = loop.call_soon_threadsafe

        def counted(callback: Any, *args: Any) -> Any:
            handed.append(callback)
            return real(callback, *args)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        watches = [waiters.watch(key).__enter__() for _ in range(10_000)]
        other = waiters.watch(("pay", "dev")).__enter__()
        woken = asyncio.gather(*(w.wait(30) for w in watches))
        await asyncio.sleep(0)
        threading.Thread(target=waiters.wake, args=(key,)).start()
        assert await asyncio.wait_for(woken, 10) == [True] * 10_000
        assert len(handed) == 1
        assert all(w.take_found() is None for w in watches)  # a plain wake brings nothing
        # A wake with a fetch: it runs once, and every waiter is woken with what it fetched.
        fetched: list[int] = []

        async def fetch() -> str:
            fetched.append(1)
            await asyncio.sleep(0.01)
            return "the config as read"

        woken = asyncio.gather(*(w.wait(30) for w in watches))
        await asyncio.sleep(0)
        threading.Thread(target=waiters.wake, args=(key, fetch)).start()
        assert await asyncio.wait_for(woken, 10) == [True] * 10_000
        assert fetched == [1] and len(handed) == 2
        assert all(w.take_found() == "the config as read" for w in watches)
        assert all(w.take_found() is None for w in watches)  # taken once
        # Woken while not waiting: the next wait returns at once, and only that one.
        await asyncio.to_thread(waiters.wake, key)
        assert await asyncio.wait_for(watches[0].wait(30), 1) is True
        assert await watches[0].wait(0.05) is False
        # A client that leaves ends the wait, which is not a wake.
        left = loop.create_future()
        loop.call_later(0.05, left.set_result, None)
        assert await asyncio.wait_for(other.wait(30, until=left), 1) is False
        for watch in [*watches, other]:
            watch.__exit__(None, None, None)
        assert not waiters._waiting

    asyncio.run(run())


def test_a_wake_pauses_the_garbage_collector_until_its_answers_are_sent() -> None:
    """Answering thousands of woken long polls at once set off full collections that walked
    every request still waiting (a 383 ms pause in the middle of a wake of 10,000). The woken
    requests step to their answers, and the end of the turn sends the last of them, with the
    collector paused; it runs again after that, and a collector paused by someone else stays
    paused."""
    import asyncio
    import gc

    from configsync.configs.waiters import Waiters
    from configsync.serving import CoalescingTransport

    class Sink:
        """A transport that records whether the collector ran when each write went out."""

        def __init__(self, sent: list[bool]) -> None:
            self.sent = sent

        def write(self, _data: bytes) -> None:
            self.sent.append(gc.isenabled())

    waiters = Waiters()
    key = ("pay", "prod")

    async def answer(watch: Any, transport: CoalescingTransport, stepped: list[bool]) -> None:
        assert await watch.wait(30) is True
        stepped.append(gc.isenabled())
        transport.write(b"head")  # as uvicorn writes a response: sent at the end of the turn
        transport.write(b"body")

    async def run() -> None:
        loop = asyncio.get_running_loop()
        sent: list[bool] = []
        stepped: list[bool] = []
        transports = [CoalescingTransport(Sink(sent), loop) for _ in range(100)]  # type: ignore[arg-type]
        watches = [waiters.watch(key).__enter__() for _ in transports]
        answers = asyncio.gather(
            *(answer(w, t, stepped) for w, t in zip(watches, transports, strict=True))
        )
        await asyncio.sleep(0)
        assert gc.isenabled()
        await asyncio.to_thread(waiters.wake, key)
        await asyncio.wait_for(answers, 10)
        for _ in range(3):
            await asyncio.sleep(0)
        assert stepped == [False] * 100
        assert len(sent) == 100 and not any(sent)  # the last ones too, at the turn's end
        assert gc.isenabled()
        # Paused by another hand: a wake does not resume it.
        gc.disable()
        try:
            again = asyncio.gather(*(w.wait(30) for w in watches))
            await asyncio.sleep(0)
            await asyncio.to_thread(waiters.wake, key)
            await asyncio.wait_for(again, 10)
            for _ in range(3):
                await asyncio.sleep(0)
            assert not gc.isenabled()
        finally:
            gc.enable()
        for watch in watches:
            watch.__exit__(None, None, None)

    asyncio.run(run())
