"""Operations routes: the original root, liveness, readiness and the Prometheus metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, select, text

import configsync
from configsync.http import Out, alternatives, errors
from configsync.metrics import ProjectionCollector, scrape

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
        checks["audit"] = _audit_lag(request)
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


def _audit_lag(request: Request) -> str:
    """Not ready when the oldest event the audit projection has not applied is older than the
    threshold: the worker stopped, or cannot keep up. (No backlog, however old the log: ok.)"""
    from configsync.events.models import EventRow
    from projections.base import checkpoint

    limit = request.app.state.settings.ready_max_audit_lag_seconds
    with request.app.state.session_factory() as session:
        done = checkpoint(session, "audit")
        oldest = session.scalar(select(EventRow.recorded_at).where(EventRow.position == done + 1))
    if oldest is None:
        return "ok"
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    behind = (datetime.now(UTC) - oldest).total_seconds()
    if behind <= limit:
        return "ok"
    return (
        f"behind: the audit projection has not applied event {done + 1}, recorded "
        f"{behind:.0f} s ago (more than {limit:g} s); is the worker running?"
    )


@router.get(
    "/metrics",
    responses={200: {"content": alternatives({"text/plain": "Prometheus text exposition format"})}},
)
def metrics(request: Request) -> Response:
    """Prometheus metrics: requests, reads, writes, conflicts, appends, waiters, projection lag,
    logins; with `serve --workers N`, every worker's in one scrape."""
    factory = request.app.state.session_factory

    def status() -> list[Any]:
        from projections.registry import status_all

        with factory() as session:
            return status_all(session)

    body, content_type = scrape(ProjectionCollector(status))
    return Response(body, media_type=content_type)


def _ping_broker(url: str) -> str:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping()
        return "ok"
    except Exception as exc:
        return f"unavailable: {exc.__class__.__name__}"
