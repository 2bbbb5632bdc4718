"""Raw ASGI middleware that runs on every request, before FastAPI's routing."""

from __future__ import annotations

import itertools
import os
import re
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from configsync.errors import InvalidInput
from configsync.http import dumps, error_body
from configsync.hygiene import MALFORMED, check_form_body, check_json_body, check_query
from configsync.logs import AccessLog

REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_id_prefix = secrets.token_hex(8)
_id_counter = itertools.count()


def new_request_id() -> str:
    """32 hex characters, unique: this process's random half and a counter (uuid4 cost 4% of a
    cached read's CPU)."""
    return f"{_id_prefix}{next(_id_counter):016x}"


def _renew_prefix() -> None:
    global _id_prefix, _id_counter
    _id_prefix, _id_counter = secrets.token_hex(8), itertools.count()


os.register_at_fork(after_in_child=_renew_prefix)  # a forked worker must not repeat its parent's

JSON_BODY = "json_body"  # where in the request's state the parsed JSON body is kept

# Room for the envelope around a document (reason, expected_version, whitespace).
BODY_OVERHEAD = 64 * 1024


class RequestGuard:
    """Raw ASGI middleware, outermost: request ids, the body limit, input hygiene and the
    request log's line.

    Written against ASGI directly because it runs on every request, including the hot read
    path, where it costs two substring tests (and, with the request log, a queue append). A
    request body (writes, logins) is read whole here, refused with 413 past the limit whether or
    not it announced its length, checked by configsync.hygiene, and handed on unchanged.
    """

    def __init__(self, app: ASGIApp, max_body: int, log: AccessLog | None = None) -> None:
        self.app = app
        self.max_body = max_body
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        incoming = None
        length = None
        content_type = b""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
            elif name == b"content-length":
                length = value
            elif name == b"content-type":
                content_type = value
        rid = incoming if incoming and REQUEST_ID.fullmatch(incoming) else new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode())
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        try:
            await self._guarded(scope, receive, send_with_id, length, content_type)
        finally:
            if self.log is not None:
                self.log.note(scope, state, status, time.perf_counter() - began)

    async def _guarded(
        self, scope: Scope, receive: Receive, send: Send, length: bytes | None, content_type: bytes
    ) -> None:
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self._too_large(send)
            return
        try:
            if "\x00" in scope["path"]:
                raise InvalidInput("the path contains a NUL character (U+0000)")
            check_query(scope.get("query_string", b""))
        except InvalidInput as exc:
            await _refuse(send, exc)
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        body = await self._read_body(receive)
        if body is None:
            await self._too_large(send)
            return
        try:
            parsed = _check_body(body, content_type)
        except InvalidInput as exc:
            await _refuse(send, exc)
            return
        if parsed is not MALFORMED:
            # The value json.loads gives for the body: the direct write path takes it from here
            # instead of parsing the body a second time.
            scope["state"][JSON_BODY] = parsed
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away; the app will see it too
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _too_large(self, send: Send) -> None:
        detail = f"request body is larger than {self.max_body} bytes"
        await _refuse(send, InvalidInput(detail), status=413, error="BodyTooLarge")


def _check_body(body: bytes, content_type: bytes) -> Any:
    """Refuses what the store cannot hold; returns the JSON value of a JSON body, else
    MALFORMED."""
    if not body:
        return MALFORMED
    if content_type.startswith(b"multipart/"):
        if b"\x00" in body:
            raise InvalidInput("the form contains a NUL character (U+0000), which cannot be stored")
        return MALFORMED
    # JSON whatever the label: the original README's `curl -d '{...}'` says form-urlencoded.
    if content_type.startswith(b"application/x-www-form-urlencoded") and body.lstrip()[:1] not in (
        b"{",
        b"[",
    ):
        check_form_body(body)
        return MALFORMED
    return check_json_body(body)


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` as if `body` had not been read yet."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # http.disconnect, when it comes

    return replayed


async def _refuse(
    send: Send, exc: InvalidInput, *, status: int | None = None, error: str | None = None
) -> None:
    status = status or exc.status_code
    body = dumps(error_body(status, exc.detail, error or type(exc).__name__))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
