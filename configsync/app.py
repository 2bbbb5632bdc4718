"""create_app(): the FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI

import configsync
from configsync.db import make_engine, make_session_factory
from configsync.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title=settings.project_name, version=configsync.__version__)
    engine = make_engine(settings.database_url)
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)

    @app.get("/")
    def root() -> dict[str, str]:
        """Health check of the original ConfigSync."""
        return {"status": "ok", "service": "ConfigSync", "version": configsync.__version__}

    return app
