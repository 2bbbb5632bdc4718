"""Who may do what to a config, declared in the endpoint's signature.

Each dependency resolves the path's service once (name check, owner lookup, decision, all by
configsync.auth.permissions) and hands the endpoint the result; the endpoint does not decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from configsync.auth.deps import CallerDep
from configsync.auth.permissions import (
    Caller,
    authorize_history,
    authorize_owner_or_admin,
    authorize_read,
    authorize_write,
)
from configsync.auth.service import service_owner
from configsync.configs.commands import WriteContext, WritePath
from configsync.configs.idempotency import IdempotencyKey, Used, claim
from configsync.deps import SessionDep, SettingsDep, client_name, request_id
from configsync.domain.documents import Limits
from configsync.domain.names import validate_name
from configsync.errors import NotFound
from configsync.secrets.vault import Vault
from configsync.settings import Settings


@dataclass(frozen=True, slots=True)
class ConfigAccess:
    """A caller allowed to act on `service`/`environment`, and what that was decided on."""

    caller: Caller
    service: str
    environment: str
    exists: bool  # whether the service existed when the access was decided
    owner_id: str | None


def _lookup(session: Session, caller: Caller, service: str, environment: str) -> ConfigAccess:
    validate_name("service", service)
    validate_name("environment", environment)
    exists, owner = service_owner(session, service)
    return ConfigAccess(caller, service, environment, exists, owner)


def read_access(session: Session, caller: Caller, service: str, environment: str) -> ConfigAccess:
    access = _lookup(session, caller, service, environment)
    authorize_read(caller, service, environment, access.owner_id, access.exists)
    return access


def write_access(session: Session, caller: Caller, service: str, environment: str) -> ConfigAccess:
    access = _lookup(session, caller, service, environment)
    authorize_write(caller, service, environment, access.owner_id, access.exists)
    return access


def expect_existing(access: ConfigAccess, expected_version: int | None) -> None:
    """A write that names a version of (or deletes) a service that does not exist is answered
    exactly as one to a service the caller may not see (404): no write probes which names are
    taken. (Without a version, or with 0, a write to a free name creates the service.)"""
    if not access.exists and expected_version:
        raise NotFound(f"service {access.service!r} not found")


def history_access(
    session: Session, caller: Caller, service: str, environment: str
) -> ConfigAccess:
    access = _lookup(session, caller, service, environment)
    authorize_history(caller, service, access.owner_id, access.exists)
    return access


def manage_access(
    session: Session, caller: Caller, service: str, environment: str, what: str
) -> ConfigAccess:
    access = _lookup(session, caller, service, environment)
    authorize_owner_or_admin(caller, service, access.owner_id, access.exists, what)
    return access


def _config_read(
    service: str, environment: str, session: SessionDep, caller: CallerDep
) -> ConfigAccess:
    return read_access(session, caller, service, environment)


def _config_write(
    service: str, environment: str, session: SessionDep, caller: CallerDep
) -> ConfigAccess:
    return write_access(session, caller, service, environment)


def _history_read(
    service: str, environment: str, session: SessionDep, caller: CallerDep
) -> ConfigAccess:
    return history_access(session, caller, service, environment)


def _roll_back(
    service: str, environment: str, session: SessionDep, caller: CallerDep
) -> ConfigAccess:
    return manage_access(session, caller, service, environment, "roll back")


def _promote(
    service: str, environment: str, session: SessionDep, caller: CallerDep
) -> ConfigAccess:
    return manage_access(session, caller, service, environment, "promote")


ConfigRead = Annotated[ConfigAccess, Depends(_config_read)]
ConfigWrite = Annotated[ConfigAccess, Depends(_config_write)]
HistoryRead = Annotated[ConfigAccess, Depends(_history_read)]
RollbackAccess = Annotated[ConfigAccess, Depends(_roll_back)]
PromoteAccess = Annotated[ConfigAccess, Depends(_promote)]


def limits(settings: Settings) -> Limits:
    return Limits(
        max_bytes=settings.max_document_bytes,
        max_keys=settings.max_document_keys,
        max_depth=settings.max_document_depth,
    )


def write_context(
    request: Request, caller: Caller, settings: Settings, session: Session, body: bytes
) -> WriteContext:
    """Who writes, from which request, under which limits, along this process's write path;
    with an Idempotency-Key, the key (locked for this transaction) and its first outcome."""
    path: WritePath = request.app.state.write_path
    key = used = None
    header = request.headers.get("idempotency-key")
    if header is not None:
        key = IdempotencyKey.of(
            caller.id,
            header,
            (request.method, request.url.path, body, request.headers.get("if-match", "")),
            timedelta(hours=settings.idempotency_key_hours),
        )
        used = claim(session, key)
    return plain_write_context(
        caller,
        settings,
        request.app.state.vault,
        path,
        request_id(request),
        client_name(request),
        idempotency=key,
        used=used,
    )


def plain_write_context(
    caller: Caller,
    settings: Settings,
    vault: Vault,
    path: WritePath,
    request_id: str,
    client: str | None,
    idempotency: IdempotencyKey | None = None,
    used: Used | None = None,
) -> WriteContext:
    """Who writes, from which request, under which limits, along this process's write path."""
    return WriteContext(
        actor=caller.actor(),
        vault=vault,
        request_id=request_id,
        client=client,
        limits=limits(settings),
        max_reason_length=settings.max_reason_length,
        path=path,
        idempotency=idempotency,
        used=used,
    )


async def raw_body(request: Request) -> bytes:
    return await request.body()


RawBody = Annotated[bytes, Depends(raw_body)]


async def _write_context(
    request: Request,
    caller: CallerDep,
    settings: SettingsDep,
    session: SessionDep,
    body: RawBody,
) -> WriteContext:
    # Without an Idempotency-Key this touches no database: built on the event loop, it saves
    # the write a worker-thread hop (the profile of a PUT shows each one).
    if request.headers.get("idempotency-key") is None:
        return write_context(request, caller, settings, session, body)
    return await run_in_threadpool(write_context, request, caller, settings, session, body)


WriteContextDep = Annotated[WriteContext, Depends(_write_context)]
