"""Every error becomes `{"detail": ..., "error": "<type name>"}` with its status: one place."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from configsync.errors import ConfigSyncError, VersionConflict
from configsync.http import error_response
from configsync.metrics import CONFLICTS

log = logging.getLogger(__name__)

# SQLSTATEs of a lock wait or statement cut short by the timeouts the API sets (configsync.db):
# lock_not_available, query_canceled, idle_in_transaction_session_timeout.
TIMED_OUT = {"55P03", "57014", "25P03"}
HTTP_ERROR_NAMES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "DocumentTooLarge",
    415: "UnsupportedMediaType",
}


def install(app: FastAPI, *, max_depth: int) -> None:
    too_deep = f"the body is nested too deeply; documents may nest {max_depth} levels"

    @app.exception_handler(ConfigSyncError)
    async def domain_error(request: Request, exc: ConfigSyncError) -> Response:
        if isinstance(exc, VersionConflict):
            CONFLICTS.inc()
        return error_response(
            exc.status_code, exc.detail, type(exc).__name__, exc.headers, **exc.extra
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()[:20]
        ]
        return error_response(422, errors, "ValidationError")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        cause = exc.__cause__  # FastAPI says only "There was an error parsing the body"
        if isinstance(cause, RecursionError):
            return error_response(422, too_deep, "InvalidDocument")
        if isinstance(cause, UnicodeDecodeError):
            detail = f"the body is not valid UTF-8 JSON: {cause.reason}"
            return error_response(400, detail, "InvalidInput")
        name = HTTP_ERROR_NAMES.get(exc.status_code, "HTTPError")
        return error_response(exc.status_code, exc.detail, name)

    @app.exception_handler(OperationalError)
    async def database_down(request: Request, exc: OperationalError) -> Response:
        if _sqlstate(exc) in TIMED_OUT:
            log.warning("a database lock or transaction timed out: %s", exc.orig)
            detail = "the config store is busy (a lock wait timed out); try again shortly"
        else:
            log.warning("database unavailable: %s", exc.orig)
            detail = "the database is unavailable; try again shortly"
        return error_response(503, detail, "ServiceUnavailable")

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> Response:
        log.exception("database error", exc_info=exc)
        return error_response(500, "internal database error", "DatabaseError")

    @app.exception_handler(RecursionError)
    async def recursion(request: Request, exc: RecursionError) -> Response:
        return error_response(422, too_deep, "InvalidDocument")


def _sqlstate(exc: DBAPIError) -> Any:
    return getattr(exc.orig, "pgcode", None)
