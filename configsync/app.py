"""create_app(): the FastAPI application, wired from its parts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.middleware import Middleware
from starlette.types import ASGIApp

import configsync
from configsync import docs, exception_handlers, health, logs
from configsync.audit.endpoints import router as audit_router
from configsync.audit.log_endpoints import router as log_router
from configsync.auth.endpoints import router as auth_router
from configsync.configs.endpoints import router as configs_router
from configsync.configs.fastpath import CachedReads
from configsync.configs.fastwrite import DirectWrites
from configsync.configs.legacy_endpoints import legacy as legacy_router
from configsync.configs.secret_endpoints import router as secrets_router
from configsync.console import pages as console
from configsync.metrics import RequestMetrics
from configsync.middleware import BODY_OVERHEAD, RequestGuard
from configsync.runtime import Runtime
from configsync.settings import Settings, get_settings


class ConfigSyncAPI(FastAPI):
    """FastAPI with an edge: raw ASGI layers that run before FastAPI's own middleware
    (ServerErrorMiddleware and the rest), which cost more than a cached answer on the hot read
    path and on every woken long poll. What the edge does not answer goes on through them."""

    def __init__(self, *, edge: list[Middleware], **kwargs: Any) -> None:
        self.edge = edge  # outermost first
        super().__init__(**kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        app = super().build_middleware_stack()
        for cls, args, kwargs in reversed(self.edge):
            app = cls(app, *args, **kwargs)
        return app


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.signing_key()  # refuse to start without one (production), or make one (development)
    logs.configure(settings.log_level, settings.log_format)
    runtime = Runtime.build(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        runtime.start()
        try:
            yield
        finally:
            runtime.stop()

    edge = [
        # Request ids, the body limit and the request log apply to every request.
        Middleware(
            RequestGuard,
            max_body=settings.max_document_bytes + BODY_OVERHEAD,
            log=runtime.access_log,
        ),
        Middleware(
            CachedReads,
            authenticator=runtime.authenticator,
            reader=runtime.reader,
            count=settings.metrics,
            max_wait=settings.max_wait_seconds,
        ),
        Middleware(
            DirectWrites,
            authenticator=runtime.authenticator,
            sessions=runtime.write_sessions,
            settings=settings,
            vault=runtime.vault,
            path=runtime.write_path,
            threads=runtime.write_threads,
            count=settings.metrics,
        ),
    ]
    app = ConfigSyncAPI(
        edge=edge,
        telemetry=None
        if settings.opentelemetry
        else {"tracing": False, "metrics": False, "logs": False},
        title=settings.project_name,
        version=configsync.__version__,
        description="Event-sourced, versioned configuration store for microservices.",
        lifespan=lifespan,
        docs_url=None,  # configsync.docs serves /docs from local assets
        redoc_url=None,  # ReDoc would load its script from a CDN
    )
    # What request dependencies reach (configsync.deps, configsync.auth.deps, the endpoints).
    app.state.runtime = runtime
    app.state.settings = settings
    app.state.engine = runtime.engine
    app.state.session_factory = runtime.session_factory
    app.state.authenticator = runtime.authenticator
    app.state.login_throttle = runtime.login_throttle
    app.state.config_reader = runtime.reader
    app.state.write_path = runtime.write_path
    app.state.vault = runtime.vault
    app.state.change_feed = runtime.feed
    if settings.metrics:
        # Behind the fast path, which counts its own answers: every request reaching the router.
        app.add_middleware(RequestMetrics)
    exception_handlers.install(app, max_depth=settings.max_document_depth)
    docs.install(app)
    routers = (
        health.router,
        legacy_router,
        auth_router,
        configs_router,
        secrets_router,
        audit_router,
        log_router,
        console.router,
    )
    for router in routers:
        app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=console.HERE / "static"), name="console-static")
    return app
