"""The original ConfigSync's /config/* routes, for clients written against it.

Each maps onto the v1 behaviour of one environment (`default` unless `?environment=` names
another): the same authorization, commands and queries, answered in the original's shapes. The
original's query names are accepted beside the ones its README used (`target_version_id` for
`version`, `version1_id`/`version2_id` for `v1`/`v2`); its row ids are version numbers here.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated

from deepdiff import DeepDiff
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ValidationError
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from configsync.auth.deps import CallerDep
from configsync.auth.permissions import Caller
from configsync.configs import commands, queries
from configsync.configs.auth import (
    WriteContextDep,
    expect_existing,
    history_access,
    manage_access,
    read_access,
    write_access,
)
from configsync.configs.commands import WriteContext, WriteResult
from configsync.configs.endpoints import ReaderDep, shown
from configsync.configs.schemas import (
    LegacyConfig,
    LegacyDeleted,
    LegacyDiff,
    LegacyHealth,
    LegacyList,
    LegacyRolledBack,
    LegacyUpdate,
    LegacyUpdated,
    LegacyVersions,
)
from configsync.deps import SessionDep
from configsync.domain.names import DEFAULT_ENVIRONMENT
from configsync.domain.secrets import mask
from configsync.errors import InvalidInput, NotFound
from configsync.events import format_instant
from configsync.http import errors, json_response

legacy = APIRouter(tags=["original ConfigSync"], responses=errors(401, 404, 413, 422, 503))
WRITE_ERRORS = errors(403, 409, 412)

Environment = Annotated[str, Query(description="the environment (the original had only one)")]
Reason = Annotated[str | None, Query(description="why: kept with the version")]


@legacy.get("/config/health", response_model=LegacyHealth, responses={503: {"model": LegacyHealth}})
def legacy_health(request: Request) -> Response:
    """The API and its database (original ConfigSync); 503 when the database does not answer."""
    engine: Engine = request.app.state.engine
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        return json_response({"api_status": "ok", "db_status": "disconnected"}, status=503)
    return json_response({"api_status": "ok", "db_status": "connected"})


@legacy.get("/config/get", response_model=LegacyConfig)
def legacy_get(
    session: SessionDep,
    caller: CallerDep,
    reader: ReaderDep,
    service: Annotated[str, Query(description="the service name")],
    environment: Environment = DEFAULT_ENVIRONMENT,
) -> Response:
    """Fetch a service's configuration (original ConfigSync)."""
    read_access(session, caller, service, environment)
    state = queries.get(session, service, environment)
    return json_response(
        {
            "service": service,
            "environment": environment,
            "version": state.version,
            "config": shown(session, reader, caller, state.document),
        }
    )


@legacy.get("/config/list", response_model=LegacyList)
def legacy_list(
    session: SessionDep,
    caller: CallerDep,
    reader: ReaderDep,
    environment: Environment = DEFAULT_ENVIRONMENT,
    target_user_id: Annotated[
        str | None, Query(description="admins: only the services this person owns")
    ] = None,
) -> Response:
    """The configs the caller may read, with their documents (original ConfigSync)."""
    configs = []
    for found in queries.list_readable(session, caller):
        if found.environment != environment:
            continue
        if caller.is_admin and target_user_id is not None and found.owner_id != target_user_id:
            continue
        state = queries.get(session, found.service, found.environment)
        configs.append(
            {
                "id": f"{found.service}/{found.environment}",
                "name": found.service,
                "environment": found.environment,
                "version": state.version,
                "config": shown(session, reader, caller, state.document),
                "updated_at": format_instant(state.updated_at),
                "user_id": found.owner_id,
            }
        )
    return json_response({"configs": configs})


async def legacy_body(request: Request) -> LegacyUpdate:
    """The body is JSON whatever the Content-Type says: the original README sends it with
    `curl -d`, which labels it application/x-www-form-urlencoded."""
    raw = await request.body()
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"the body must be JSON: {exc}") from None
    try:
        return LegacyUpdate.model_validate(parsed)
    except ValidationError as exc:
        raise InvalidInput(_validation_message(exc)) from None


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


@legacy.post(
    "/config/update",
    response_model=LegacyUpdated,
    responses=WRITE_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": LegacyUpdate.model_json_schema()}},
        }
    },
)
def legacy_update(
    body: Annotated[LegacyUpdate, Depends(legacy_body)],
    session: SessionDep,
    caller: CallerDep,
    ctx: WriteContextDep,
) -> Response:
    """Create or replace a service's configuration (original ConfigSync)."""
    return legacy_write(session, caller, body, ctx)


def legacy_write(
    session: Session, caller: Caller, body: LegacyUpdate, ctx: WriteContext
) -> Response:
    """POST /config/update's work (here and on configsync.configs.fastwrite's direct path)."""
    access = write_access(session, caller, body.name, body.environment)
    ctx = dataclasses.replace(ctx, service_existed=access.exists)
    result = commands.replace(
        session, body.name, body.environment, body.config, ctx, reason=body.reason
    )
    return legacy_written(body, result)


def legacy_written(body: LegacyUpdate, result: WriteResult) -> Response:
    """POST /config/update's answer, as the original words it."""
    what = f"{body.name}/{body.environment}"
    message = (
        f"config {what} saved as version {result.version}"
        if result.changed
        else f"config {what} unchanged at version {result.version}"
    )
    return json_response(
        {
            "status": "success",
            "message": message,
            "service": body.name,
            "environment": body.environment,
            "version": result.version,
        }
    )


@legacy.get("/config/versions/{service}", response_model=LegacyVersions, responses=errors(403))
def legacy_versions(
    service: str,
    session: SessionDep,
    caller: CallerDep,
    environment: Environment = DEFAULT_ENVIRONMENT,
) -> Response:
    """Every version of a service's configuration, newest first, secrets masked (original
    ConfigSync). As there, a service the caller cannot see has no versions (not a 404)."""
    try:
        history_access(session, caller, service, environment)
        states = queries.versions(session, service, environment)
    except NotFound:
        states = []
    items = [
        {
            "id": s.entry.version,
            "service_name": service,
            "version": s.entry.version,
            "config": None if s.deleted else mask(s.document),
            "created_at": format_instant(s.entry.recorded_at),
            "user_id": (s.entry.actor or {}).get("id"),
            "action": s.entry.action,
            "reason": s.entry.reason,
            "rollback_of": s.entry.rollback_of,
        }
        for s in states
    ]
    return json_response({"service_name": service, "environment": environment, "versions": items})


def _either(name: str, value: int | None, original: int | None) -> int:
    if value is not None and original is not None and value != original:
        raise InvalidInput(f"{name} given twice with different values; send one")
    chosen = value if value is not None else original
    if chosen is None:
        raise InvalidInput(f"the query parameter {name} (a version number) is required")
    return chosen


VersionQuery = Annotated[int | None, Query(ge=1)]


@legacy.get("/config/diff/{service}", response_model=LegacyDiff, responses=errors(403))
def legacy_diff(
    service: str,
    session: SessionDep,
    caller: CallerDep,
    v1: VersionQuery = None,
    v2: VersionQuery = None,
    version1_id: VersionQuery = None,
    version2_id: VersionQuery = None,
    environment: Environment = DEFAULT_ENVIRONMENT,
) -> Response:
    """What changed between two versions, as DeepDiff reports it and as v1's diff does; secret
    values masked (original ConfigSync)."""
    first, second = _either("v1", v1, version1_id), _either("v2", v2, version2_id)
    history_access(session, caller, service, environment)
    a = mask(queries.state_at(session, service, environment, first).document)
    b = mask(queries.state_at(session, service, environment, second).document)
    found = queries.diff(session, service, environment, first, second)
    return json_response(
        {
            "service": service,
            "environment": environment,
            "version1": first,
            "version2": second,
            "diff": json.loads(DeepDiff(a, b, ignore_order=True).to_json()),
            "changes": found.difference.changes,
            "stats": found.difference.stats,
        }
    )


@legacy.post("/config/rollback/{service}", response_model=LegacyRolledBack, responses=WRITE_ERRORS)
def legacy_rollback(
    service: str,
    session: SessionDep,
    caller: CallerDep,
    ctx: WriteContextDep,
    version: VersionQuery = None,
    target_version_id: VersionQuery = None,
    environment: Environment = DEFAULT_ENVIRONMENT,
    reason: Reason = None,
) -> Response:
    """Make an earlier version's document current again, as a new version (original
    ConfigSync; owner or admin)."""
    to_version = _either("version", version, target_version_id)
    access = manage_access(session, caller, service, environment, "roll back")
    result = commands.rollback(session, service, environment, to_version, ctx, reason=reason)
    return json_response(
        {
            "id": f"{service}/{environment}",
            "name": service,
            "environment": environment,
            "version": result.version,
            "config": result.masked(),
            "updated_at": format_instant(result.updated_at),
            "user_id": access.owner_id,
            "rollback_of": to_version,
            "changed": result.changed,
        },
        headers={"ETag": f'"{result.version}"'},
    )


@legacy.delete("/config/delete/{service}", response_model=LegacyDeleted, responses=WRITE_ERRORS)
def legacy_delete(
    service: str,
    session: SessionDep,
    caller: CallerDep,
    ctx: WriteContextDep,
    environment: Environment = DEFAULT_ENVIRONMENT,
    reason: Reason = None,
) -> Response:
    """Delete a service's configuration: a deleting version is appended and the history stays
    (original ConfigSync)."""
    access = write_access(session, caller, service, environment)
    expect_existing(access, expected_version=1)
    result = commands.delete(session, service, environment, ctx, reason=reason)
    return json_response(
        {
            "detail": "Service config deleted successfully",
            "service": service,
            "environment": environment,
            "version": result.version,
        }
    )
