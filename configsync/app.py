"""create_app(): the FastAPI application, its middleware, error handling and wiring."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import configsync
from configsync.audit.endpoints import router as audit_router
from configsync.auth.authenticator import Authenticator
from configsync.auth.endpoints import router as auth_router
from configsync.configs.endpoints import legacy as legacy_router
from configsync.configs.endpoints import router as configs_router
from configsync.configs.fastpath import CachedReads
from configsync.configs.reader import ConfigReader
from configsync.configs.rendering import dumps, json_response
from configsync.configs.service import EVENT_LISTENERS, GROUP_COMMIT, record
from configsync.db import make_engine, make_session_factory
from configsync.errors import ConfigSyncError
from configsync.events.group import GroupCommit
from configsync.feed import LOCAL_LISTENER, ChangeFeed
from configsync.settings import Settings, get_settings
from configsync.tasks import Dispatcher

log = logging.getLogger(__name__)

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
        body = dumps({"detail": f"request body is larger than {self.max_body} bytes"})
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


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.signing_key()  # refuse to start without one (production), or make one (development)
    engine = make_engine(settings.database_url)
    session_factory = make_session_factory(engine)
    authenticator = Authenticator(settings)
    reader = ConfigReader(session_factory)

    def changed(payload: str) -> None:
        kind, _, rest = payload.partition(":")
        if kind == "config":
            reader.changed(payload)
        elif kind == "key":
            authenticator.keys.invalidate(rest)

    def caches(enabled: bool) -> None:
        reader.cache.switch(enabled)
        authenticator.keys.switch(enabled)

    dispatcher = Dispatcher(settings, session_factory)
    info: dict[str, Any] = {LOCAL_LISTENER: changed, EVENT_LISTENERS: [dispatcher]}
    # Group commit on PostgreSQL (configsync.events.group). Not on SQLite: there a request's
    # transaction holds the database's one write lock, which the group's transaction would need.
    group = None
    if engine.dialect.name == "postgresql" and settings.group_commit:
        group = GroupCommit.for_database(settings.database_url, record)
        info[GROUP_COMMIT] = group
    session_factory.configure(info=info)
    feed = (
        ChangeFeed(
            settings.database_url,
            on_message=changed,
            on_connected=lambda: caches(True),
            on_disconnected=lambda: caches(False),
        )
        if engine.dialect.name == "postgresql"
        else None
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if feed is not None:
            feed.start()
        try:
            yield
        finally:
            if feed is not None:
                feed.stop()
            dispatcher.close()
            engine.dispose()
            if group is not None:
                group.close()

    app = FastAPI(
        title=settings.project_name,
        version=configsync.__version__,
        description="Event-sourced, versioned configuration store for microservices.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = session_factory
    app.state.authenticator = authenticator
    app.state.config_reader = reader
    app.state.change_feed = feed
    app.add_middleware(CachedReads, authenticator=authenticator, reader=reader)
    # Added last, so outermost: request ids and the body limit apply to every request.
    app.add_middleware(RequestGuard, max_body=settings.max_document_bytes + BODY_OVERHEAD)
    _install_error_handlers(app, settings.max_document_depth)

    @app.get("/", tags=["operations"])
    def root() -> dict[str, str]:
        """Health check of the original ConfigSync."""
        return {"status": "ok", "service": "ConfigSync", "version": configsync.__version__}

    @app.get("/health/live", tags=["operations"])
    def live() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/health/ready", tags=["operations"])
    def ready() -> JSONResponse:
        """The database (and the broker, when one is configured) answer."""
        checks: dict[str, str] = {}
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unavailable: {exc.__class__.__name__}"
        if settings.redis_url:
            checks["broker"] = _ping_broker(settings.redis_url)
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "checks": checks},
            status_code=200 if ok else 503,
        )

    app.include_router(legacy_router)
    app.include_router(auth_router)
    app.include_router(configs_router)
    app.include_router(audit_router)
    return app


def _ping_broker(url: str) -> str:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping()
        return "ok"
    except Exception as exc:
        return f"unavailable: {exc.__class__.__name__}"


def _install_error_handlers(app: FastAPI, max_depth: int) -> None:
    too_deep_message = f"the body is nested too deeply; documents may nest {max_depth} levels"

    def problem(status: int, detail: Any, request: Request, **extra: Any) -> Response:
        body = {"detail": detail, **extra}
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return json_response(body, status=status, headers=headers)

    @app.exception_handler(ConfigSyncError)
    async def domain_error(request: Request, exc: ConfigSyncError) -> Response:
        return problem(exc.status_code, exc.detail, request, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()[:20]
        ]
        return problem(422, errors, request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        cause = exc.__cause__  # FastAPI says only "There was an error parsing the body"
        if isinstance(cause, RecursionError):
            return problem(422, too_deep_message, request)
        if isinstance(cause, UnicodeDecodeError):
            return problem(400, f"the body is not valid UTF-8 JSON: {cause.reason}", request)
        return problem(exc.status_code, exc.detail, request)

    @app.exception_handler(OperationalError)
    async def database_down(request: Request, exc: OperationalError) -> Response:
        log.warning("database unavailable: %s", exc.orig)
        return problem(503, "the database is unavailable; try again shortly", request)

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> Response:
        log.exception("database error", exc_info=exc)
        return problem(500, "internal database error", request)

    @app.exception_handler(RecursionError)
    async def too_deep(request: Request, exc: RecursionError) -> Response:
        return problem(422, too_deep_message, request)
