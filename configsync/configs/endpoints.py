"""HTTP endpoints of the config domain: v1 and the original ConfigSync's /config/*."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from configsync.auth.authenticator import Authenticator, credentials
from configsync.auth.permissions import (
    Caller,
    authorize_history,
    authorize_owner_or_admin,
    authorize_read,
    authorize_write,
)
from configsync.auth.service import service_owner
from configsync.configs import fastpath
from configsync.configs import service as configs
from configsync.configs.documents import DEFAULT_ENVIRONMENT, validate_name
from configsync.configs.models import ServiceRow
from configsync.configs.reader import ConfigEntry, ConfigReader, response_body
from configsync.configs.rendering import MEDIA_TYPES, json_response, render
from configsync.configs.schemas import (
    ConfigDelete,
    ConfigDeleted,
    ConfigList,
    ConfigOut,
    ConfigWrite,
    ConfigWritten,
    DiffOut,
    HistoryOut,
    LegacyConfig,
    LegacyUpdate,
    LegacyUpdated,
    PromoteBody,
    RollbackBody,
)
from configsync.configs.service import WriteResult
from configsync.db import commit
from configsync.deps import CallerDep, SessionDep, write_context
from configsync.errors import Deleted, InvalidInput, NotFound
from configsync.events import format_instant
from projections.current import ConfigCurrentRow

router = APIRouter(tags=["configs"])
legacy = APIRouter(tags=["original ConfigSync"])

CONFIG_PATH = "/v1/configs/{service}/{environment}"


def parse_etag(value: str | None, header: str) -> int | None:
    try:
        return fastpath.parse_etag(value)
    except ValueError:
        raise InvalidInput(f'{header} must be a config version in quotes, such as "3"') from None


def _not_found(service: str, environment: str) -> NotFound:
    return NotFound(f"config {service}/{environment} not found")


def _check_names(service: str, environment: str) -> None:
    validate_name("service", service)
    validate_name("environment", environment)


# --- reads -----------------------------------------------------------------------------------


@router.get(
    CONFIG_PATH,
    response_model=ConfigOut,
    responses={304: {"description": "not modified"}, 404: {"description": "not found or deleted"}},
)
async def read_config(
    service: str,
    environment: str,
    request: Request,
    version: Annotated[int | None, Query(ge=1)] = None,
    as_of: Annotated[datetime | None, Query(description="ISO-8601 instant")] = None,
    format: Annotated[str, Query(pattern="^(json|dotenv|yaml)$")] = "json",
    consistent: bool = False,
    wait: Annotated[
        float | None,
        Query(ge=0, description="with If-None-Match: seconds to wait for a newer version"),
    ] = None,
) -> Response:
    """The config: current, at a version, or as of an instant; JSON, dotenv or YAML.

    With `If-None-Match` and `wait`, a long poll: answers as soon as the version moves past the
    ETag, or 304 when the wait ends.
    """
    state = request.app.state
    _check_names(service, environment)
    authenticator: Authenticator = state.authenticator
    reader: ConfigReader = state.config_reader
    if version is None and as_of is None and not consistent:
        # Usually answered by the CachedReads middleware before it gets here; this is the same
        # decision for requests that reached the endpoint anyway.
        answer = fastpath.cached_answer(
            authenticator, reader, request.headers, service, environment, format
        )
        if answer is not None:
            return _respond(answer)
    creds = credentials(request.headers)
    caller = authenticator.cached(creds)
    if caller is None:
        caller = await run_in_threadpool(_resolve_caller, request, creds)
    if version is not None or as_of is not None:
        return await run_in_threadpool(
            _read_past, request, caller, service, environment, version, as_of, format
        )
    seen = parse_etag(request.headers.get("if-none-match"), "If-None-Match")
    entry = None if consistent else reader.cached(service, environment)
    if entry is not None and seen is not None and seen > entry.version:
        entry = None  # the caller has seen a newer version than this process: ask the database
    if entry is None:
        exists, entry = await run_in_threadpool(reader.load, service, environment)
    else:
        exists = True
    owner = entry.owner_id if entry else await run_in_threadpool(_owner, request, service)
    authorize_read(caller, service, environment, owner, exists)
    if wait and seen is not None and entry is not None and entry.version <= seen:
        entry = await _long_poll(request, reader, service, environment, seen, wait) or entry
    return _answer(entry, service, environment, seen, format)


# How often a long poll reads the database again even if nothing woke it (a missed message;
# SQLite, which has no change feed).
LONG_POLL_RECHECK_SECONDS = 2.0


async def _long_poll(
    request: Request, reader: ConfigReader, service: str, environment: str, seen: int, wait: float
) -> ConfigEntry | None:
    """Wait until the config moves past `seen`, or `wait` seconds (capped by the settings)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, request.app.state.settings.max_wait_seconds)
    entry = None
    while (remaining := deadline - loop.time()) > 0:
        await reader.waiters.wait((service, environment), min(remaining, LONG_POLL_RECHECK_SECONDS))
        if await request.is_disconnected():
            return None
        _, entry = await run_in_threadpool(reader.load, service, environment)
        if entry is None or entry.version > seen:
            return entry
    return entry


def _respond(answer: fastpath.Answer) -> Response:
    return Response(
        answer.body or None,
        status_code=answer.status,
        media_type=answer.media_type,
        headers={"ETag": answer.etag},
    )


def _resolve_caller(request: Request, creds: Any) -> Caller:
    with request.app.state.session_factory() as session:
        caller: Caller = request.app.state.authenticator.resolve(session, creds)
        return caller


def _owner(request: Request, service: str) -> str | None:
    with request.app.state.session_factory() as session:
        return session.scalar(select(ServiceRow.owner_id).where(ServiceRow.name == service))


def _answer(
    entry: ConfigEntry | None, service: str, environment: str, seen: int | None, fmt: str
) -> Response:
    if entry is None:
        raise _not_found(service, environment)
    if entry.deleted:
        raise Deleted(
            f"config {service}/{environment} was deleted at version {entry.version}",
            deleted_at_version=entry.version,
        )
    headers = {"ETag": entry.etag}
    if seen == entry.version:
        return Response(status_code=304, headers=headers)
    return Response(entry.rendered(fmt), media_type=MEDIA_TYPES[fmt], headers=headers)


def _read_past(
    request: Request,
    caller: Caller,
    service: str,
    environment: str,
    version: int | None,
    as_of: datetime | None,
    fmt: str,
) -> Response:
    with request.app.state.session_factory() as session:
        exists, owner = service_owner(session, service)
        authorize_read(caller, service, environment, owner, exists)
        if version is not None:
            past = configs.get_version(session, service, environment, version)
        else:
            assert as_of is not None
            if as_of.tzinfo is None:
                raise InvalidInput("as_of needs a time zone, such as 2026-01-01T00:00:00Z")
            past = configs.get_as_of(session, service, environment, as_of)
    headers = {"ETag": f'"{past.version}"'}
    if fmt != "json":
        return Response(render(past.document, fmt), media_type=MEDIA_TYPES[fmt], headers=headers)
    body = {
        "service": service,
        "environment": environment,
        "version": past.version,
        "data": past.document,
        "updated_at": format_instant(past.recorded_at),
        "updated_by": past.actor,
    }
    return json_response(body, headers=headers)


@router.get("/v1/configs", response_model=ConfigList)
def list_configs(session: SessionDep, caller: CallerDep) -> Response:
    """The configs the caller may read, with their versions."""
    query = (
        select(ConfigCurrentRow, ServiceRow.owner_id)
        .join(ServiceRow, ServiceRow.name == ConfigCurrentRow.service)
        .where(ConfigCurrentRow.deleted.is_(False))
        .order_by(ConfigCurrentRow.service, ConfigCurrentRow.environment)
    )
    if caller.kind == "api_key":
        query = query.where(ConfigCurrentRow.service == caller.service)
        if caller.environment:
            query = query.where(ConfigCurrentRow.environment == caller.environment)
    elif caller.is_person and caller.role == "user":
        query = query.where(ServiceRow.owner_id == caller.id)
    items = [
        {
            "service": row.service,
            "environment": row.environment,
            "version": row.version,
            "updated_at": format_instant(row.updated_at),
        }
        for row, _owner_id in session.execute(query)
    ]
    return json_response({"items": items})


# --- writes ----------------------------------------------------------------------------------


def _expected(request: Request, body_expected: int | None) -> int | None:
    header = parse_etag(request.headers.get("if-match"), "If-Match")
    if header is not None and body_expected is not None and header != body_expected:
        raise InvalidInput("If-Match and expected_version disagree; send one of them")
    return header if header is not None else body_expected


def _authorize_write(session: Session, caller: Caller, service: str, environment: str) -> None:
    _check_names(service, environment)
    exists, owner = service_owner(session, service)
    authorize_write(caller, service, environment, owner, exists)


def _written(result: WriteResult) -> Response:
    body = response_body(result, {"changed": result.changed})
    status = 201 if result.created else 200
    return json_response(body, status=status, headers={"ETag": f'"{result.version}"'})


def _write_document(
    operation: Any,
    service: str,
    environment: str,
    body: ConfigWrite,
    request: Request,
    session: Session,
    caller: Caller,
) -> Response:
    """PUT and PATCH: the same checks, a different operation on the document."""
    expected = _expected(request, body.expected_version)
    _authorize_write(session, caller, service, environment)
    result = operation(
        session,
        service,
        environment,
        body.data,
        write_context(request, caller),
        reason=body.reason,
        expected_version=expected,
    )
    commit(session)
    return _written(result)


@router.put(
    CONFIG_PATH,
    response_model=ConfigWritten,
    responses={201: {"model": ConfigWritten, "description": "created"}, 412: {}},
)
def put_config(
    service: str,
    environment: str,
    body: ConfigWrite,
    request: Request,
    session: SessionDep,
    caller: CallerDep,
) -> Response:
    """Replace the whole document (201 when it creates the config)."""
    return _write_document(configs.replace, service, environment, body, request, session, caller)


@router.patch(
    CONFIG_PATH,
    response_model=ConfigWritten,
    responses={201: {"model": ConfigWritten, "description": "created"}, 412: {}},
)
def patch_config(
    service: str,
    environment: str,
    body: ConfigWrite,
    request: Request,
    session: SessionDep,
    caller: CallerDep,
) -> Response:
    """Apply a JSON Merge Patch (RFC 7396) to the document: null removes a key."""
    return _write_document(configs.patch, service, environment, body, request, session, caller)


@router.delete(CONFIG_PATH, response_model=ConfigDeleted, responses={412: {}})
def delete_config(
    service: str,
    environment: str,
    request: Request,
    session: SessionDep,
    caller: CallerDep,
    body: ConfigDelete | None = None,
) -> Response:
    """Delete the config: a deleting event is appended and the history stays."""
    body = body or ConfigDelete()
    expected = _expected(request, body.expected_version)
    _authorize_write(session, caller, service, environment)
    result = configs.delete(
        session,
        service,
        environment,
        write_context(request, caller),
        reason=body.reason,
        expected_version=expected,
    )
    commit(session)
    return json_response(
        {
            "service": service,
            "environment": environment,
            "version": result.version,
            "deleted": True,
        },
        headers={"ETag": f'"{result.version}"'},
    )


# --- history, diffs, rollback, promotion ------------------------------------------------------


def _history_reader(session: Session, caller: Caller, service: str, environment: str) -> None:
    _check_names(service, environment)
    exists, owner = service_owner(session, service)
    authorize_history(caller, service, owner, exists)


@router.get(CONFIG_PATH + "/history", response_model=HistoryOut)
def config_history(
    service: str,
    environment: str,
    session: SessionDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before_version: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """Every version, newest first: who, when, what (a one-line summary) and why."""
    _history_reader(session, caller, service, environment)
    page = configs.history(
        session, service, environment, limit=limit, before_version=before_version
    )
    for item in page.items:
        item["recorded_at"] = format_instant(item["recorded_at"])
    return json_response({"items": page.items, "next_before_version": page.next_before_version})


@router.get(CONFIG_PATH + "/diff", response_model=DiffOut)
def config_diff(
    service: str,
    environment: str,
    session: SessionDep,
    caller: CallerDep,
    from_version: Annotated[int, Query(alias="from", ge=1)],
    to_version: Annotated[int | None, Query(alias="to", ge=1)] = None,
) -> Response:
    """What changed between two versions (`to` defaults to the current one)."""
    _history_reader(session, caller, service, environment)
    return json_response(configs.diff(session, service, environment, from_version, to_version))


@router.get("/v1/services/{service}/compare", response_model=DiffOut, tags=["configs"])
def compare_environments(
    service: str,
    session: SessionDep,
    caller: CallerDep,
    from_env: Annotated[str, Query()],
    to_env: Annotated[str, Query()],
) -> Response:
    """What differs between two environments' current documents."""
    for environment in (from_env, to_env):
        _check_names(service, environment)
        exists, owner = service_owner(session, service)
        authorize_read(caller, service, environment, owner, exists)
    return json_response(configs.compare(session, service, from_env, to_env))


def _authorize_manage(
    session: Session, caller: Caller, service: str, environment: str, what: str
) -> None:
    _check_names(service, environment)
    exists, owner = service_owner(session, service)
    authorize_owner_or_admin(caller, service, owner, exists, what)


@router.post(CONFIG_PATH + "/rollback", response_model=ConfigWritten, responses={412: {}})
def rollback_config(
    service: str,
    environment: str,
    body: RollbackBody,
    request: Request,
    session: SessionDep,
    caller: CallerDep,
) -> Response:
    """Make an earlier version's document current again, as a new version (owner or admin)."""
    _authorize_manage(session, caller, service, environment, "roll back")
    result = configs.rollback(
        session,
        service,
        environment,
        body.to_version,
        write_context(request, caller),
        reason=body.reason,
        expected_version=body.expected_version,
    )
    commit(session)
    extra: dict[str, Any] = {"changed": result.changed, "rollback_of": body.to_version}
    if not result.changed:
        extra["message"] = f"already at the document of version {body.to_version}: nothing appended"
    return json_response(response_body(result, extra), headers={"ETag": f'"{result.version}"'})


@router.post(CONFIG_PATH + "/promote", response_model=ConfigWritten, responses={412: {}})
def promote_config(
    service: str,
    environment: str,
    body: PromoteBody,
    request: Request,
    session: SessionDep,
    caller: CallerDep,
) -> Response:
    """Copy this environment's document (or some keys of it) into another (owner or admin)."""
    _authorize_manage(session, caller, service, environment, "promote")
    result = configs.promote(
        session,
        service,
        environment,
        body.to_environment,
        write_context(request, caller),
        keys=body.keys,
        reason=body.reason,
        expected_version=body.expected_version,
    )
    commit(session)
    return _written(result)


# --- the original ConfigSync -----------------------------------------------------------------


@legacy.get("/config/get", response_model=LegacyConfig)
def legacy_get(
    session: SessionDep,
    caller: CallerDep,
    service: Annotated[str, Query(description="the service name")],
    environment: str = DEFAULT_ENVIRONMENT,
) -> Response:
    """Fetch a service's configuration (original ConfigSync)."""
    _check_names(service, environment)
    exists, owner = service_owner(session, service)
    authorize_read(caller, service, environment, owner, exists)
    state = configs.get(session, service, environment)
    return json_response(
        {
            "service": service,
            "environment": environment,
            "version": state.version,
            "config": state.document,
        }
    )


@legacy.post(
    "/config/update",
    response_model=LegacyUpdated,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": LegacyUpdate.model_json_schema()}},
        }
    },
)
async def legacy_update(request: Request) -> Response:
    """Create or replace a service's configuration (original ConfigSync).

    The body is JSON whatever the Content-Type says: the original README sends it with
    `curl -d`, which labels it application/x-www-form-urlencoded.
    """
    raw = await request.body()
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"the body must be JSON: {exc}") from None
    try:
        body = LegacyUpdate.model_validate(parsed)
    except ValidationError as exc:
        raise InvalidInput(_validation_message(exc)) from None
    return await run_in_threadpool(_legacy_write, request, body)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def _legacy_write(request: Request, body: LegacyUpdate) -> Response:
    with request.app.state.session_factory() as session:
        caller = request.app.state.authenticator.resolve(session, credentials(request.headers))
        _authorize_write(session, caller, body.name, body.environment)
        result = configs.replace(
            session,
            body.name,
            body.environment,
            body.config,
            write_context(request, caller),
            reason=body.reason,
        )
        commit(session)
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
