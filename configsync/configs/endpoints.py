"""HTTP endpoints of the config domain: v1 and the original ConfigSync's /config/*.

Thin: each parses, receives its authorization from a dependency (configsync.configs.auth),
calls one command or query, and shapes the answer. The request's unit of work commits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from configsync.auth.deps import BriefCallerDep, CallerDep
from configsync.auth.permissions import Caller, authorize_owner_or_admin, sees_secrets
from configsync.configs import commands, queries, receipts
from configsync.configs.auth import (
    ConfigAccess,
    ConfigWrite,
    HistoryRead,
    PromoteAccess,
    RollbackAccess,
    WriteContextDep,
    expect_existing,
    read_access,
)
from configsync.configs.commands import WriteContext, WriteResult
from configsync.configs.longpoll import wait_past
from configsync.configs.queries import Difference
from configsync.configs.reader import ConfigReader, Lookup, response_body
from configsync.configs.reads import Answer, ReadRequest, decide, parse_etag
from configsync.configs.rendering import MEDIA_TYPES, RAW_MEDIA_TYPE, render
from configsync.configs.schemas import (
    BlameOut,
    ClientsOut,
    CompareOut,
    ConfigDelete,
    ConfigDeleted,
    ConfigList,
    ConfigOut,
    ConfigWritten,
    DiffOut,
    HistoryOut,
    PromoteBody,
    RollbackBody,
    RolledBack,
)
from configsync.configs.schemas import ConfigWrite as ConfigWriteBody
from configsync.deps import SessionDep
from configsync.domain.documents import parse_key
from configsync.domain.names import validate_name
from configsync.domain.secrets import mask
from configsync.errors import InvalidInput
from configsync.events import format_instant
from configsync.http import alternatives, errors, json_response
from configsync.hygiene import Instant
from configsync.metrics import count_read

router = APIRouter(tags=["configs"], responses=errors(401, 404, 413, 422, 503))
WRITE_ERRORS = errors(403, 409, 412)

CONFIG_PATH = "/v1/configs/{service}/{environment}"


async def get_reader(request: Request) -> ConfigReader:  # async: no worker thread for this
    reader: ConfigReader = request.app.state.config_reader
    return reader


ReaderDep = Annotated[ConfigReader, Depends(get_reader)]


# --- reads -----------------------------------------------------------------------------------


@router.get(
    CONFIG_PATH,
    response_model=ConfigOut,
    responses={
        200: {
            "content": {
                **alternatives(
                    {
                        "text/plain": "format=dotenv: KEY='value' lines",
                        "application/yaml": "format=yaml: the document as YAML",
                    }
                ),
                RAW_MEDIA_TYPE: {
                    "schema": {"type": "object", "description": "format=raw: the document alone"}
                },
            }
        },
        304: {"description": "not modified: the caller has the current version"},
    },
)
async def read_config(
    service: str,
    environment: str,
    request: Request,
    caller: BriefCallerDep,
    reader: ReaderDep,
    version: Annotated[int | None, Query(ge=1)] = None,
    as_of: Annotated[Instant | None, Query(description="ISO-8601 instant")] = None,
    format: Annotated[
        str,
        Query(
            pattern="^(json|raw|dotenv|yaml)$",
            description="json: the envelope; raw: the document alone as JSON; dotenv; yaml",
        ),
    ] = "json",
    consistent: bool = False,
    wait: Annotated[
        float | None,
        Query(ge=0, description="with If-None-Match: seconds to wait for a newer version"),
    ] = None,
) -> Response:
    """The config: current, at a version, or as of an instant; JSON (the envelope, or `raw`: the
    document alone), dotenv or YAML.

    With `If-None-Match` and `wait`, a long poll: answers as soon as the version moves past the
    ETag, or 304 when the wait ends.
    """
    if version is not None or as_of is not None:
        return await run_in_threadpool(
            _read_past, reader, caller, service, environment, version, as_of, format
        )
    read = ReadRequest(
        service,
        environment,
        format,
        parse_etag(request.headers.get("if-none-match")),
        min(wait or 0.0, request.app.state.settings.max_wait_seconds),
    )
    validate_name("service", service)
    validate_name("environment", environment)
    if not read.wait:
        found = await _lookup(reader, read, consistent)
        answer = decide(caller, found, read)
        assert isinstance(answer, Answer)
        reader.receipts.read(caller, service, environment, answer.version)
        return _respond(answer, format, request)
    # Registered before the first read: a write landing between that read and the wait still
    # wakes this request at once.
    with reader.waiters.watch((service, environment)) as watch:
        found = await _lookup(reader, read, consistent)
        answer = await wait_past(reader, caller, read, found, watch, request.receive)
    reader.receipts.read(caller, service, environment, answer.version)
    return _respond(answer, format, request)


async def _lookup(reader: ConfigReader, read: ReadRequest, consistent: bool) -> Lookup:
    """The config from this process's cache when it is fresh enough, else from the database."""
    entry = None if consistent else reader.cached(read.service, read.environment)
    if entry is not None and not read.behind(entry.version):
        return Lookup.of(entry)
    return await run_in_threadpool(reader.load, read.service, read.environment)


def _respond(answer: Answer, fmt: str, request: Request) -> Response:
    if request.app.state.settings.metrics:
        count_read(fmt)
    return Response(
        answer.body or None,
        status_code=answer.status,
        media_type=answer.media_type,
        headers={"ETag": answer.etag},
    )


def _read_past(
    reader: ConfigReader,
    caller: Any,
    service: str,
    environment: str,
    version: int | None,
    as_of: datetime | None,
    fmt: str,
) -> Response:
    with reader.session() as session:
        read_access(session, caller, service, environment)
        if version is not None:
            past = queries.get_version(session, service, environment, version)
        else:
            assert as_of is not None
            past = queries.get_as_of(session, service, environment, as_of)
        document = shown(session, reader, caller, past.document)
    headers = {"ETag": f'"{past.version}"'}
    if fmt != "json":
        return Response(render(document, fmt), media_type=MEDIA_TYPES[fmt], headers=headers)
    body = {
        "service": service,
        "environment": environment,
        "version": past.version,
        "data": document,
        "updated_at": format_instant(past.recorded_at),
        "updated_by": past.actor,
    }
    return json_response(body, headers=headers)


def shown(session: Session, reader: ConfigReader, caller: Caller, stored: Any) -> Any:
    """A stored document as a reader of the config gets it: secrets opened or masked."""
    return reader.vault.open(session, stored) if sees_secrets(caller) else mask(stored)


@router.get("/v1/configs", response_model=ConfigList)
def list_configs(session: SessionDep, caller: CallerDep) -> Response:
    """The configs the caller may read, with their versions."""
    items = [
        {
            "service": c.service,
            "environment": c.environment,
            "version": c.version,
            "updated_at": format_instant(c.updated_at),
        }
        for c in queries.list_readable(session, caller)
    ]
    return json_response({"items": items})


# --- writes ----------------------------------------------------------------------------------


def _expected(request: Request, body_expected: int | None) -> int | None:
    return expected_version(request.headers.get("if-match"), body_expected)


def expected_version(if_match: str | None, body_expected: int | None) -> int | None:
    header = parse_etag(if_match, "If-Match")
    if header is not None and body_expected is not None and header != body_expected:
        raise InvalidInput("If-Match and expected_version disagree; send one of them")
    return header if header is not None else body_expected


def write_document(
    operation: Callable[..., WriteResult],
    body: ConfigWriteBody,
    if_match: str | None,
    session: Session,
    access: ConfigAccess,
    ctx: WriteContext,
) -> Response:
    """PUT and PATCH (here and on configsync.configs.fastwrite's direct path): the same checks,
    a different operation on the document."""
    expected = expected_version(if_match, body.expected_version)
    expect_existing(access, expected)
    result = operation(
        session,
        access.service,
        access.environment,
        body.data,
        dataclasses.replace(ctx, service_existed=access.exists),
        reason=body.reason,
        expected_version=expected,
    )
    return written(result)


def written(result: WriteResult, extra: dict[str, Any] | None = None) -> Response:
    """The answer to a write: the config as written, 201 if it was created."""
    body = response_body(result, {"changed": result.changed, **(extra or {})})
    status = 201 if result.created else 200
    return json_response(body, status=status, headers={"ETag": f'"{result.version}"'})


@router.put(
    CONFIG_PATH,
    response_model=ConfigWritten,
    responses={201: {"model": ConfigWritten, "description": "created"}, **WRITE_ERRORS},
)
def put_config(
    body: ConfigWriteBody,
    request: Request,
    session: SessionDep,
    access: ConfigWrite,
    ctx: WriteContextDep,
) -> Response:
    """Replace the whole document (201 when it creates the config)."""
    return write_document(
        commands.replace, body, request.headers.get("if-match"), session, access, ctx
    )


@router.patch(
    CONFIG_PATH,
    response_model=ConfigWritten,
    responses={201: {"model": ConfigWritten, "description": "created"}, **WRITE_ERRORS},
)
def patch_config(
    body: ConfigWriteBody,
    request: Request,
    session: SessionDep,
    access: ConfigWrite,
    ctx: WriteContextDep,
) -> Response:
    """Apply a JSON Merge Patch (RFC 7396) to the document: null removes a key."""
    return write_document(
        commands.patch, body, request.headers.get("if-match"), session, access, ctx
    )


@router.delete(CONFIG_PATH, response_model=ConfigDeleted, responses=WRITE_ERRORS)
def delete_config(
    request: Request,
    session: SessionDep,
    access: ConfigWrite,
    ctx: WriteContextDep,
    body: ConfigDelete | None = None,
) -> Response:
    """Delete the config: a deleting event is appended and the history stays."""
    body = body or ConfigDelete()
    expected = _expected(request, body.expected_version)
    expect_existing(access, expected_version=1)  # a service that does not exist has nothing
    result = commands.delete(
        session,
        access.service,
        access.environment,
        ctx,
        reason=body.reason,
        expected_version=expected,
    )
    return json_response(
        {
            "service": access.service,
            "environment": access.environment,
            "version": result.version,
            "deleted": True,
        },
        headers={"ETag": f'"{result.version}"'},
    )


# --- history, diffs, rollback, promotion ------------------------------------------------------


@router.get(CONFIG_PATH + "/history", response_model=HistoryOut, responses=errors(403))
def config_history(
    session: SessionDep,
    access: HistoryRead,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before_version: Annotated[int | None, Query(ge=1)] = None,
    key: Annotated[
        str | None, Query(description="only versions that changed this key (a.b.c) or inside it")
    ] = None,
) -> Response:
    """Every version, newest first: who, when, what (a one-line summary) and why."""
    page = queries.history(
        session,
        access.service,
        access.environment,
        limit=limit,
        before_version=before_version,
        key=parse_key(key) if key is not None else None,
    )
    items = [
        {
            "version": e.version,
            "recorded_at": format_instant(e.recorded_at),
            "actor": e.actor,
            "action": e.action,
            "summary": e.summary,
            "reason": e.reason,
            "rollback_of": e.rollback_of,
            "promoted_from": e.promoted_from,
            "position": e.position,
        }
        for e in page.items
    ]
    return json_response({"items": items, "next_before_version": page.next_before_version})


@router.get(CONFIG_PATH + "/clients", response_model=ClientsOut, responses=errors(403))
def config_clients(session: SessionDep, access: HistoryRead, reader: ReaderDep) -> Response:
    """Read receipts: each live API key that may read the config, the version it last fetched,
    when, and whether it is behind the current version (owner, admin, auditor). A receipt may be
    a few seconds late when another API process answered the read."""
    state = queries.get(session, access.service, access.environment)
    found = receipts.clients(session, access.service, access.environment, reader.receipts)
    return json_response(
        {
            "service": access.service,
            "environment": access.environment,
            "version": state.version,
            "clients": [
                {
                    "key_id": c.key_id,
                    "name": c.name,
                    "prefix": c.prefix,
                    "permission": c.permission,
                    "version": c.version,
                    "read_at": format_instant(c.read_at) if c.read_at else None,
                    "behind": c.version is None or c.version < state.version,
                }
                for c in found
            ],
        }
    )


@router.get(CONFIG_PATH + "/blame", response_model=BlameOut, responses=errors(403))
def config_blame(session: SessionDep, access: HistoryRead) -> Response:
    """For every key path of the current document: the version, time, actor, action and reason
    of its last change (owner, admin, auditor)."""
    found = queries.blame(session, access.service, access.environment)
    return json_response(
        {
            "service": access.service,
            "environment": access.environment,
            "keys": [
                {
                    "path": b.path,
                    "version": b.version,
                    "recorded_at": format_instant(b.recorded_at),
                    "actor": b.actor,
                    "action": b.action,
                    "reason": b.reason,
                }
                for b in found
            ],
        }
    )


def _difference(difference: Difference) -> dict[str, Any]:
    return {"changes": difference.changes, "stats": difference.stats}


@router.get(CONFIG_PATH + "/diff", response_model=DiffOut, responses=errors(403))
def config_diff(
    session: SessionDep,
    access: HistoryRead,
    ctx: WriteContextDep,
    from_version: Annotated[int, Query(alias="from", ge=1)],
    to_version: Annotated[int | None, Query(alias="to", ge=1)] = None,
    reveal: Annotated[
        bool,
        Query(description="secret values in plain text (owner, admin); recorded in the log"),
    ] = False,
) -> Response:
    """What changed between two versions (`to` defaults to the current one); secret values
    masked, or shown with `reveal=true` to the owner or an admin, which the log records."""
    if reveal:
        authorize_owner_or_admin(
            access.caller, access.service, access.owner_id, access.exists, "reveal secrets"
        )
    found = queries.diff(
        session,
        access.service,
        access.environment,
        from_version,
        to_version,
        reveal=ctx.vault if reveal else None,
    )
    body: dict[str, Any] = {"from": found.from_version, "to": found.to_version}
    if reveal:
        body["revealed"] = [list(path) for path in found.revealed]
        if found.revealed:
            commands.record_reveal(
                session,
                access.service,
                access.environment,
                found.from_version,
                found.to_version,
                [list(path) for path in found.revealed],
                ctx,
            )
    return json_response({**body, **_difference(found.difference)})


@router.get("/v1/services/{service}/compare", response_model=CompareOut)
def compare_environments(
    service: str,
    session: SessionDep,
    caller: CallerDep,
    from_env: Annotated[str, Query()],
    to_env: Annotated[str, Query()],
) -> Response:
    """What differs between two environments' current documents."""
    for environment in (from_env, to_env):
        read_access(session, caller, service, environment)
    found = queries.compare(session, service, from_env, to_env)
    return json_response(
        {
            "service": found.service,
            "from_env": found.from_environment,
            "to_env": found.to_environment,
            "from_version": found.from_version,
            "to_version": found.to_version,
            **_difference(found.difference),
        }
    )


@router.post(CONFIG_PATH + "/rollback", response_model=RolledBack, responses=WRITE_ERRORS)
def rollback_config(
    body: RollbackBody, session: SessionDep, access: RollbackAccess, ctx: WriteContextDep
) -> Response:
    """Make an earlier version's document current again, as a new version (owner or admin)."""
    result = commands.rollback(
        session,
        access.service,
        access.environment,
        body.to_version,
        ctx,
        reason=body.reason,
        expected_version=body.expected_version,
    )
    extra: dict[str, Any] = {"changed": result.changed, "rollback_of": body.to_version}
    if not result.changed:
        extra["message"] = f"already at the document of version {body.to_version}: nothing appended"
    extra["data"] = result.masked()  # not a read: secret values masked
    return json_response(response_body(result, extra), headers={"ETag": f'"{result.version}"'})


@router.post(
    CONFIG_PATH + "/promote",
    response_model=ConfigWritten,
    responses={201: {"model": ConfigWritten, "description": "created"}, **WRITE_ERRORS},
)
def promote_config(
    body: PromoteBody, session: SessionDep, access: PromoteAccess, ctx: WriteContextDep
) -> Response:
    """Copy this environment's document (or some keys of it) into another (owner or admin)."""
    result = commands.promote(
        session,
        access.service,
        access.environment,
        body.to_environment,
        ctx,
        keys=body.keys,
        reason=body.reason,
        expected_version=body.expected_version,
    )
    return written(result, {"data": result.masked()})  # not a read: secret values masked
