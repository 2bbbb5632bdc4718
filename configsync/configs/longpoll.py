"""The wait of a long poll, shared by the cached fast path and the endpoint.

The caller has registered (`Waiters.watch`) *before* the look that produced `found`, so a write
landing between that look and the wait still wakes it. While the change feed is connected (the
cache is trusted) every change wakes the waiter and an idle one does nothing at all; without it
(SQLite, or the feed down) it also looks every few seconds, for writes of other processes. The
waiters of a config that a change wakes share one database read (`ConfigReader.refresh`).
"""

from __future__ import annotations

import asyncio

from starlette.types import Receive

from configsync.auth.permissions import Caller
from configsync.configs.reader import ConfigReader, Lookup
from configsync.configs.reads import WAIT, Answer, ReadRequest, decide
from configsync.configs.waiters import Watch

# How often a long poll reads the database again when no change feed can wake it.
RECHECK_SECONDS = 2.0


async def wait_past(
    reader: ConfigReader,
    caller: Caller,
    read: ReadRequest,
    found: Lookup,
    watch: Watch,
    receive: Receive,
) -> Answer:
    """The answer once the config moves past the caller's version, or 304 when the wait ends or
    the client leaves (heard on `receive`, the request's ASGI channel: an idle waiter notices at
    once and polls nothing). Raises what `decide` raises (NotFound, Deleted…)."""
    answer = decide(caller, found, read)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + read.wait
    left = asyncio.ensure_future(_disconnect(receive))
    try:
        while answer is WAIT and (remaining := deadline - loop.time()) > 0:
            trusted = reader.cache.enabled
            timeout = remaining if trusted else min(remaining, RECHECK_SECONDS)
            woken = await watch.wait(timeout, until=left)
            if left.done():
                break  # nobody to answer
            if not woken and trusted:
                continue  # the deadline (or the feed dropped: the loop re-times the wait)
            brought = watch.take_found()  # the read the wake made once for all its waiters
            found = (
                brought
                if brought is not None
                else await reader.refresh(read.service, read.environment)
            )
            answer = decide(caller, found, read)
    finally:
        left.cancel()
    if isinstance(answer, Answer):
        return answer
    entry = found.entry
    assert entry is not None
    return Answer(304, b"", None, entry.etag, entry.version)


async def _disconnect(receive: Receive) -> None:
    """Returns when the client has gone (a GET's body, if any, is read and dropped)."""
    while (await receive())["type"] != "http.disconnect":
        pass
