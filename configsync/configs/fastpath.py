"""Reads answered from this process's caches alone: the hot path of every polling service.

The `CachedReads` ASGI middleware answers GET /v1/configs/{service}/{environment} before
FastAPI's routing and validation (which cost more than the whole answer on a cache hit) when
the caches hold both the caller and the config. What it answers is decided by
configsync.configs.reads.decide, the same function the endpoint uses. Anything it cannot answer
(an unknown key, an error to report, a stale or missing entry, an unusual query) goes on to the
endpoint, which gives the same answer the slow way or the error. A long poll whose caller and
config are cached waits here too (configsync.configs.longpoll, the endpoint's own wait).
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from configsync.auth.authenticator import Authenticator, credentials
from configsync.auth.permissions import Caller
from configsync.configs.longpoll import wait_past
from configsync.configs.reader import ConfigReader, Lookup
from configsync.configs.reads import Answer, ReadRequest, Wait, decide, parse_etag
from configsync.configs.rendering import FORMATS
from configsync.domain.names import NAME_PATTERN
from configsync.errors import ConfigSyncError
from configsync.metrics import CONFIG_ROUTE, FAST_PATH

_PATH = re.compile(r"/v1/configs/([^/]+)/([^/]+)")


def cached_answer(
    authenticator: Authenticator,
    reader: ConfigReader,
    headers: Any,
    read: ReadRequest,
) -> tuple[Answer | Wait, Caller, Lookup] | None:
    """The answer to a plain GET from the caches (or WAIT: a long poll whose caller has the
    current version), whom it is for and what it was decided on; None if the endpoint must
    give it."""
    try:
        caller = authenticator.cached(credentials(headers))
        if caller is None:
            return None
        entry = reader.cached(read.service, read.environment)
        if entry is None or read.behind(entry.version):
            return None  # missing, or older than what the caller has already seen
        found = Lookup.of(entry)
        answer = decide(caller, found, read)
    except ConfigSyncError:
        return None  # an error to report: the endpoint words it
    return answer, caller, found


class ScopeHeaders:
    """A request's headers, read from the ASGI scope on demand, the first of a repeated one as
    Starlette's `Headers.get` gives it: a cached read looks at three headers, not all (decoding
    all of them cost 2.5% of its CPU)."""

    __slots__ = ("_raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw

    @classmethod
    def of(cls, scope: Scope) -> ScopeHeaders:
        return cls(scope["headers"])

    def get(self, name: str, default: str | None = None) -> str | None:
        """`name` in lower case, as ASGI servers hand header names over."""
        wanted = name.encode("latin-1")
        for key, value in self._raw:
            if key == wanted:
                return value.decode("latin-1")
        return default

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None


class CachedReads:
    """ASGI middleware: GET /v1/configs/{service}/{environment} from the caches when it can."""

    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        reader: ConfigReader,
        count: bool = True,
        max_wait: float = 60.0,
    ) -> None:
        self.app = app
        self.count = count
        self.max_wait = max_wait
        self.authenticator = authenticator
        self.reader = reader

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        began = time.perf_counter()
        found = self._try(scope) if scope["type"] == "http" and scope["method"] == "GET" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        answer, caller, read = found
        if not isinstance(answer, Answer):
            # A long poll, waited here: a woken waiter's answer costs what a cached read
            # costs, not a trip through the router (what 10,000 waiters woken at once pay).
            try:
                answer = await self._wait(caller, read, receive)
            except ConfigSyncError:
                await self.app(scope, receive, send)  # deleted meanwhile: the endpoint says so
                return
        self.reader.receipts.read(caller, read.service, read.environment, answer.version)
        headers = [
            (b"etag", answer.etag.encode()),
            (b"content-length", str(len(answer.body)).encode()),
        ]
        if answer.media_type:
            headers.append((b"content-type", answer.media_type.encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})
        if self.count:
            FAST_PATH.count(read.fmt, answer.status, time.perf_counter() - began)

    async def _wait(self, caller: Caller, read: ReadRequest, receive: Receive) -> Answer:
        with self.reader.waiters.watch((read.service, read.environment)) as watch:
            # Registered: look again, so a write that landed since the first look is not missed.
            entry = self.reader.cached(read.service, read.environment)
            if entry is not None and not read.behind(entry.version):
                found = Lookup.of(entry)
            else:
                found = await self.reader.refresh(read.service, read.environment)
            return await wait_past(self.reader, caller, read, found, watch, receive)

    def _try(self, scope: Scope) -> tuple[Answer | Wait, Caller, ReadRequest] | None:
        match = _PATH.fullmatch(scope["path"])
        if match is None:
            return None
        service, environment = match.groups()
        if not (NAME_PATTERN.fullmatch(service) and NAME_PATTERN.fullmatch(environment)):
            return None
        fmt, wait = "json", 0.0
        query = scope.get("query_string", b"")
        if query:
            params = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
            if len(params) != query.count(b"&") + 1 or not params.keys() <= {"format", "wait"}:
                return None  # version, as_of, consistent, repeats: the endpoint decides
            fmt = params.get("format", "json")
            if fmt not in FORMATS:
                return None
            if "wait" in params:
                try:
                    wait = float(params["wait"])
                except ValueError:
                    return None  # the endpoint words the error
                if not 0 <= wait < float("inf"):
                    return None
                wait = min(wait, self.max_wait)
        headers = ScopeHeaders.of(scope)
        try:
            read = ReadRequest(
                service, environment, fmt, parse_etag(headers.get("if-none-match")), wait
            )
        except ConfigSyncError:
            return None
        found = cached_answer(self.authenticator, self.reader, headers, read)
        if found is None:
            return None
        answer, caller, _ = found
        state = scope.setdefault("state", {})  # for the request log (configsync.logs)
        state["caller"] = caller.log_name
        state["route"] = CONFIG_ROUTE
        return answer, caller, read
