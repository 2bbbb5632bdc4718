"""Reads answered from this process's caches alone: the hot path of every polling service.

The `CachedReads` ASGI middleware answers GET /v1/configs/{service}/{environment} before
FastAPI's routing and validation (which cost more than the whole answer on a cache hit) when
the caches hold both the caller and the config. What it answers is decided by
configsync.configs.reads.decide, the same function the endpoint uses. Anything it cannot answer
(an unknown key, an error to report, a stale or missing entry, a long poll that must wait, an
unusual query) goes on to the endpoint, which gives the same answer the slow way or the error.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from configsync.auth.authenticator import Authenticator, credentials
from configsync.auth.permissions import Caller
from configsync.configs.reader import ConfigReader, Lookup
from configsync.configs.reads import Answer, ReadRequest, decide, parse_etag
from configsync.configs.rendering import FORMATS
from configsync.domain.names import NAME_PATTERN
from configsync.errors import ConfigSyncError
from configsync.metrics import CONFIG_ROUTE, FAST_PATH

_PATH = re.compile(r"/v1/configs/([^/]+)/([^/]+)")


def cached_answer(
    authenticator: Authenticator,
    reader: ConfigReader,
    headers: Any,
    service: str,
    environment: str,
    fmt: str,
) -> tuple[Answer, Caller] | None:
    """The answer to a plain GET from the caches (and whom it is for), or None if the endpoint
    must give it."""
    try:
        caller = authenticator.cached(credentials(headers))
        if caller is None:
            return None
        read = ReadRequest(service, environment, fmt, parse_etag(headers.get("if-none-match")))
        entry = reader.cached(service, environment)
        if entry is None or read.behind(entry.version):
            return None  # missing, or older than what the caller has already seen
        answer = decide(caller, Lookup.of(entry), read)
    except ConfigSyncError:
        return None  # an error to report: the endpoint words it
    return (answer, caller) if isinstance(answer, Answer) else None


class _Headers(dict[str, str]):
    @classmethod
    def of(cls, scope: Scope) -> _Headers:
        return cls((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])


class CachedReads:
    """ASGI middleware: GET /v1/configs/{service}/{environment} from the caches when it can."""

    def __init__(
        self, app: ASGIApp, authenticator: Authenticator, reader: ConfigReader, count: bool = True
    ) -> None:
        self.app = app
        self.count = count
        self.authenticator = authenticator
        self.reader = reader

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        began = time.perf_counter()
        found = self._try(scope) if scope["type"] == "http" and scope["method"] == "GET" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        answer, fmt = found
        headers = [
            (b"etag", answer.etag.encode()),
            (b"content-length", str(len(answer.body)).encode()),
        ]
        if answer.media_type:
            headers.append((b"content-type", answer.media_type.encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})
        if self.count:
            FAST_PATH.count(fmt, answer.status, time.perf_counter() - began)

    def _try(self, scope: Scope) -> tuple[Answer, str] | None:
        match = _PATH.fullmatch(scope["path"])
        if match is None:
            return None
        service, environment = match.groups()
        if not (NAME_PATTERN.fullmatch(service) and NAME_PATTERN.fullmatch(environment)):
            return None
        fmt = "json"
        query = scope.get("query_string", b"")
        if query:
            params = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            if len(params) != 1 or params[0][0] != "format" or params[0][1] not in FORMATS:
                return None  # version, as_of, consistent, or anything odd: the endpoint decides
            fmt = params[0][1]
        found = cached_answer(
            self.authenticator, self.reader, _Headers.of(scope), service, environment, fmt
        )
        if found is None:
            return None
        answer, caller = found
        self.reader.receipts.read(caller, service, environment, answer.version)
        state = scope.setdefault("state", {})  # for the request log (configsync.logs)
        state["caller"] = caller.log_name
        state["route"] = CONFIG_ROUTE
        return answer, fmt
