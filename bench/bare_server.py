"""bench/watchers.py's floor: what this machine costs to answer N held connections at once.

No HTTP framework and no application: uvloop (the loop `configsync serve` runs on), one
`asyncio.Protocol` per connection, every request held until a `POST` arrives on any
connection, then the same pre-built response bytes written to each held connection in one pass.
What is left is the kernel's loopback send and the measuring client's own receive: no server
written in Python can answer N watchers faster than this one on the same machine.

Usage: python -m bench.bare_server PORT BODY_FILE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import cast

import uvloop


class _Held(asyncio.Protocol):
    def __init__(self, held: list[asyncio.Transport], answer: bytes) -> None:
        self._held = held
        self._answer = answer
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        if not data.startswith(b"POST "):
            self._held.append(self._transport)
            return
        answer, held = self._answer, self._held[:]
        self._held.clear()
        for transport in held:
            transport.write(answer)
        self._transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")


async def _serve(port: int, answer: bytes) -> None:
    held: list[asyncio.Transport] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Held(held, answer), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    port, body = int(sys.argv[1]), Path(sys.argv[2]).read_bytes()
    answer = (
        b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\netag: "2"\r\n'
        b"content-length: %d\r\n\r\n" % len(body)
    ) + body
    uvloop.run(_serve(port, answer))


if __name__ == "__main__":
    main()
