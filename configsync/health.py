"""Operations routes: the original root, liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text

import configsync
from configsync.http import Out, errors

router = APIRouter(tags=["operations"], responses=errors(413, 422))


@router.get("/")
def root() -> dict[str, str]:
    """Health check of the original ConfigSync."""
    return {"status": "ok", "service": "ConfigSync", "version": configsync.__version__}


@router.get("/health/live")
def live() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


class Readiness(Out):
    status: str
    checks: dict[str, str]


@router.get("/health/ready", response_model=Readiness, responses={503: {"model": Readiness}})
def ready(request: Request) -> JSONResponse:
    """The database (and the broker, when one is configured) answer, and the log under the
    projections has not been rewritten."""
    engine: Engine = request.app.state.engine
    checks: dict[str, str] = {}
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {exc.__class__.__name__}"
    if checks["database"] == "ok":
        checks["log"] = _log_intact(request)
    redis_url = request.app.state.settings.redis_url
    if redis_url:
        checks["broker"] = _ping_broker(redis_url)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
    )


def _log_intact(request: Request) -> str:
    """Not ready when a projection's checkpoint event is gone or changed (a rewritten log)."""
    from projections.base import rewritten

    with request.app.state.session_factory() as session:
        problem = rewritten(session)
    return "ok" if problem is None else f"rewritten: {problem}"


def _ping_broker(url: str) -> str:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping()
        return "ok"
    except Exception as exc:
        return f"unavailable: {exc.__class__.__name__}"
