"""Reads answered from this process's caches alone: the hot path of every polling service.

`cached_answer` is the one place that decides whether a GET can be answered without the
database, and what the answer is. The endpoint calls it first; the `CachedReads` ASGI
middleware calls it before FastAPI's routing and validation, which cost more than the whole
answer on a cache hit. Anything it cannot answer (an unknown key, an error to report, a stale
or missing entry, an unusual query) goes on to the full endpoint, which gives the same answer
the slow way or the right error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from configsync.auth.authenticator import Authenticator, credentials
from configsync.auth.permissions import can_read
from configsync.configs.documents import NAME_PATTERN
from configsync.configs.reader import ConfigReader
from configsync.configs.rendering import FORMATS, MEDIA_TYPES
from configsync.errors import ConfigSyncError

_PATH = re.compile(r"/v1/configs/([^/]+)/([^/]+)")


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    media_type: str | None
    etag: str


def parse_etag(value: str | None) -> int | None:
    """`"3"`, `W/"3"` or `3` → 3; absent → None; raises ValueError for anything else."""
    if value is None:
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit():
        raise ValueError(text)
    return int(text)


def cached_answer(
    authenticator: Authenticator,
    reader: ConfigReader,
    headers: Any,
    service: str,
    environment: str,
    fmt: str,
) -> Answer | None:
    """The answer to GET service/environment from the caches, or None if it needs the database."""
    try:
        caller = authenticator.cached(credentials(headers))
        seen = parse_etag(headers.get("if-none-match"))
    except (ConfigSyncError, ValueError):
        return None  # an error to report: the endpoint words it
    if caller is None:
        return None
    entry = reader.cached(service, environment)
    if entry is None or entry.deleted or (seen is not None and seen > entry.version):
        return None  # missing, gone, or older than what the caller has already seen
    if not can_read(caller, service, environment, entry.owner_id):
        return None
    if seen == entry.version:
        return Answer(304, b"", None, entry.etag)
    try:
        body = entry.rendered(fmt)
    except ConfigSyncError:
        return None
    return Answer(200, body, MEDIA_TYPES[fmt], entry.etag)


class _Headers(dict[str, str]):
    @classmethod
    def of(cls, scope: Scope) -> _Headers:
        return cls((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])


class CachedReads:
    """ASGI middleware: GET /v1/configs/{service}/{environment} from the caches when it can."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator, reader: ConfigReader) -> None:
        self.app = app
        self.authenticator = authenticator
        self.reader = reader

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = self._try(scope) if scope["type"] == "http" and scope["method"] == "GET" else None
        if answer is None:
            await self.app(scope, receive, send)
            return
        headers = [
            (b"etag", answer.etag.encode()),
            (b"content-length", str(len(answer.body)).encode()),
        ]
        if answer.media_type:
            headers.append((b"content-type", answer.media_type.encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})

    def _try(self, scope: Scope) -> Answer | None:
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
        return cached_answer(
            self.authenticator, self.reader, _Headers.of(scope), service, environment, fmt
        )
