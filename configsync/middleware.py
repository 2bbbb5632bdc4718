"""Raw ASGI middleware that runs on every request, before FastAPI's routing."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from configsync.http import dumps, error_body

REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Room for the envelope around a document (reason, expected_version, whitespace).
BODY_OVERHEAD = 64 * 1024


class RequestGuard:
    """Raw ASGI middleware: request ids, and request bodies over the limit refused before parsing.

    Written against ASGI directly because it runs on every request, including the hot read path.
    """

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
            elif name == b"content-length":
                length = value
        rid = incoming if incoming and REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self._too_large(send_with_id)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send_with_id)
        except _BodyTooLarge:
            await self._too_large(send_with_id)

    async def _too_large(self, send: Send) -> None:
        body = dumps(
            error_body(413, f"request body is larger than {self.max_body} bytes", "BodyTooLarge")
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass
