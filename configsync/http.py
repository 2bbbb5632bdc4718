"""JSON answers and error bodies: serialized one way for every route."""

from __future__ import annotations

import json
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response


class Out(BaseModel):
    """A response body: exactly these fields (a test checks every JSON answer against it)."""

    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    """Every error: what is wrong, the error type's name, and structured extras where they help
    (`current_version`, `deleted_at_version`, ...)."""

    model_config = ConfigDict(extra="allow")

    detail: str | list[dict[str, Any]] = Field(description="what is wrong")
    error: str = Field(description="the error type, such as NotFound or VersionConflict")


def kept(data: bytes) -> bytes:
    """Bytes to keep for long (a cache): a copy of exactly their size. orjson's output keeps the
    buffer it was written in (about 32 KB for a 4 KB answer), which a cache of 100,000 configs
    would pay for 100,000 times."""
    return bytes(memoryview(data))


def loads(data: bytes) -> Any:
    """`dumps` undone, exactly: the standard library (orjson turns integers beyond 64 bits into
    floats without a word)."""
    return json.loads(data)


def dumps(value: Any) -> bytes:
    """JSON bytes, fast: orjson, or the standard library for integers beyond 64 bits."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer serialized by `dumps`, not by FastAPI's default encoder."""
    return Response(dumps(body), status_code=status, media_type="application/json", headers=headers)


def error_body(status: int, detail: Any, error: str, **extra: Any) -> dict[str, Any]:
    """`{"detail": what is wrong, "error": the error type's name, ...extras}`."""
    return {"detail": detail, "error": error, **extra}


def error_response(
    status: int, detail: Any, error: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer", **(headers or {})}
    return json_response(error_body(status, detail, error, **extra), status, headers or None)


ERROR_DESCRIPTIONS = {
    400: "taken: the username or email is registered already (the original /auth/register)",
    401: "not authenticated: no, a bad, an expired or a revoked token or key",
    403: "authenticated, but not allowed to do this",
    404: "not found (or not visible to the caller: the same answer)",
    409: "conflicts with what exists (an account, a service created meanwhile)",
    412: "the config is not at the version the request expected (If-Match, expected_version)",
    413: "the request body or the document is too large",
    422: "the request is malformed: the detail says which part and why",
    429: "too many attempts: retry after the Retry-After header's seconds",
    503: "the database is unavailable or busy: retry shortly (with the same Idempotency-Key)",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error statuses: each with the one error schema."""
    return {s: {"model": ErrorOut, "description": ERROR_DESCRIPTIONS[s]} for s in statuses}


def alternatives(media_types: dict[str, str]) -> dict[str, Any]:
    """Content other than JSON a 200 may carry: media type -> description of the text."""
    return {m: {"schema": {"type": "string", "description": d}} for m, d in media_types.items()}
