"""The HTTP protocol `configsync serve` gives uvicorn: its httptools protocol, with a response's
writes sent together.

uvicorn writes a response's status line and headers, then its body, each with its own
`transport.write`, and uvloop sends each at once: two `send` calls, two loopback segments and,
for the client, two wake-ups. A GIL profile of the API under PUT load put those two writes at a
tenth of the API's CPU (the first one 8.9%, the second 3.4%); a cached read or a woken long poll
is little else. Here a connection's writes wait for the end of the event loop's turn and go out
as one: a response's head and body are written in one turn (nothing between them waits).

Held to the end of the turn, not just paired: bench.read's cached GET went from 1.18-1.24x the
trivial app to 1.33-1.36x with each head sent with its body, and to 1.56-1.71x with every
connection's writes sent at the end of the turn (more answers go out, and more requests come
back, per turn of the loop). A turn that wakes many long polls at once sends their answers as
they are made, a few dozen at a time, not all at its end: ten thousand watchers would otherwise
wait for the last one's answer to be made before the first goes out.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Connections whose writes wait at once, past which they all go out without waiting for the end
# of the turn.
MAX_WAITING = 64


class _EndOfTurn:
    """An event loop's connections with writes waiting, sent at the end of the current turn."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weak: this is the value of `_turns`, whose key the loop is (a strong reference here
        # would keep every loop that ever served a connection, and its entry, alive).
        self._loop = weakref.ref(loop)
        self._waiting: list[CoalescingTransport] = []

    def add(self, transport: CoalescingTransport) -> None:
        if len(self._waiting) >= MAX_WAITING:
            self.send()  # those before it (whose answers are whole by now) go out
        if not self._waiting:
            loop = self._loop()
            assert loop is not None  # a transport's loop outlives its writes
            loop.call_soon(self.send)
        self._waiting.append(transport)

    def send(self) -> None:
        waiting, self._waiting = self._waiting, []
        for transport in waiting:
            transport.flush()


_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _EndOfTurn] = (
    weakref.WeakKeyDictionary()
)


def _end_of_turn(loop: asyncio.AbstractEventLoop) -> _EndOfTurn:
    turn = _turns.get(loop)
    if turn is None:
        turn = _turns[loop] = _EndOfTurn(loop)
    return turn


class CoalescingTransport:
    """A transport whose writes within one turn of the event loop are sent as one."""

    __slots__ = ("_pending", "_transport", "_turn")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._turn = _end_of_turn(loop)
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._turn.add(self)
        else:
            self._pending.append(data)

    def flush(self) -> None:
        """Send what waits (at the end of the turn, or before a close)."""
        pending, self._pending = self._pending, None
        if pending:
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self.flush()  # a response written just before the close still goes out
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's own
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a CoalescingTransport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing = CoalescingTransport(transport, self.loop)
        super().connection_made(coalescing)  # type: ignore[arg-type]
