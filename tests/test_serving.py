"""The server's HTTP protocol: a response's writes in one turn of the event loop go out as one
write, and nothing is lost, reordered or held back."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import httpx

from configsync.serving import MAX_WAITING, CoalescingTransport
from tests.conftest import clean_env, running_server


class Recording(asyncio.Transport):
    """A transport that records what it is asked to do (the socket's side is not under test)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bytes]] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.calls.append(("write", bytes(data)))

    def close(self) -> None:
        self.calls.append(("close", b""))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort", b""))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 7


def test_writes_in_one_turn_go_out_together_at_its_end() -> None:
    async def scenario() -> list[list[tuple[str, bytes]]]:
        inner = Recording()
        transport = CoalescingTransport(inner, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"body")
        during = list(inner.calls)
        await asyncio.sleep(0)  # the turn ends
        after_first = list(inner.calls)
        transport.write(b"next")
        await asyncio.sleep(0)
        return [during, after_first, list(inner.calls)]

    during, after_first, after_second = asyncio.run(scenario())
    assert during == []
    assert after_first == [("write", b"HTTP/1.1 200 OK\r\n\r\nbody")]
    assert after_second == [*after_first, ("write", b"next")]


def test_many_connections_writing_in_one_turn_do_not_wait_for_its_end() -> None:
    """Ten thousand long polls woken in one turn: answers go out a few dozen at a time as they
    are made, not all at the turn's end."""

    async def scenario() -> tuple[list[int], list[int]]:
        loop = asyncio.get_running_loop()
        inners = [Recording() for _ in range(MAX_WAITING + 1)]
        transports = [CoalescingTransport(inner, loop) for inner in inners]
        for transport in transports:
            transport.write(b"head")
            transport.write(b"body")
        during = [len(inner.calls) for inner in inners]
        await asyncio.sleep(0)
        return during, [len(inner.calls) for inner in inners]

    during, after = asyncio.run(scenario())
    assert during == [1] * MAX_WAITING + [0]  # the first batch went out within the turn
    assert after == [1] * (MAX_WAITING + 1)


def test_a_close_sends_what_waits_first_and_an_abort_drops_it() -> None:
    async def scenario() -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
        loop = asyncio.get_running_loop()
        closed, aborted = Recording(), Recording()
        first, second = CoalescingTransport(closed, loop), CoalescingTransport(aborted, loop)
        first.write(b"last words")
        first.close()
        second.write(b"never sent")
        second.abort()
        await asyncio.sleep(0)  # the flushes scheduled for the turn find nothing left
        return closed.calls, aborted.calls

    closed, aborted = asyncio.run(scenario())
    assert closed == [("write", b"last words"), ("close", b"")]
    assert aborted == [("abort", b"")]


def test_a_stream_of_writes_goes_out_whole_and_in_order() -> None:
    async def scenario() -> tuple[list[bytes], bool, int]:
        inner = Recording()
        transport = CoalescingTransport(inner, asyncio.get_running_loop())
        for n in range(7):
            transport.write(b"%d," % n)
            if n == 3:
                await asyncio.sleep(0)  # a turn ends mid-stream
        await asyncio.sleep(0)
        sent = [data for _, data in inner.calls]
        return sent, transport.is_closing(), transport.get_write_buffer_size()

    sent, closing, buffered = asyncio.run(scenario())
    assert sent == [b"0,1,2,3,", b"4,5,6,"]  # one write a turn
    assert closing is False and buffered == 7  # the rest is asked of the transport itself


def _exchange(url: str, requests: list[bytes]) -> bytes:
    """The raw bytes a server sends back for requests sent one after another on one
    connection, each read until its answer is complete (Content-Length)."""
    host, port = url.removeprefix("http://").split(":")
    received = b""
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        for request in requests:
            conn.sendall(request)
            answer = b""
            while True:
                head, _, body = answer.partition(b"\r\n\r\n")
                if _ and b"content-length: " in head.lower():
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    if len(body) >= length:
                        break
                chunk = conn.recv(65536)
                assert chunk, "the server closed the connection mid-answer"
                answer += chunk
            received += answer
    return received


def test_a_served_connection_answers_request_after_request_whole(tmp_path: Path) -> None:
    """`configsync serve` (the coalescing protocol): kept-alive requests are each answered
    in full and in order, and a large body arrives intact."""
    with running_server(tmp_path, clean_env()) as url:
        spec = httpx.get(url + "/openapi.json")
        assert len(spec.content) > 64 * 1024
        get = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"
        big = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
        raw = _exchange(url, [get, big, get])
        answers = raw.split(b"HTTP/1.1 ")[1:]
        assert [a.split(b" ", 1)[0] for a in answers] == [b"200", b"200", b"200"]
        assert json.loads(answers[1].partition(b"\r\n\r\n")[2]) == spec.json()
        with httpx.Client(base_url=url) as client:  # one connection, many answers
            for _ in range(20):
                assert client.get("/health/live").status_code == 200
