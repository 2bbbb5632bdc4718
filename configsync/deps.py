"""Request-scoped dependencies: the session, the settings, the caller."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from configsync.auth.authenticator import Authenticator, credentials
from configsync.auth.permissions import Caller
from configsync.configs.documents import Limits
from configsync.configs.service import WriteContext
from configsync.db import rollback
from configsync.settings import Settings


def get_session(request: Request) -> Iterator[Session]:
    """A session for the request; endpoints that write call configsync.db.commit themselves."""
    session: Session = request.app.state.session_factory()
    try:
        yield session
    finally:
        if session.in_transaction():
            rollback(session)
        session.close()


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_authenticator(request: Request) -> Authenticator:
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_caller(request: Request, session: SessionDep) -> Caller:
    return get_authenticator(request).resolve(session, credentials(request.headers))


CallerDep = Annotated[Caller, Depends(get_caller)]


def request_id(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    return rid or uuid.uuid4().hex


def write_context(request: Request, caller: Caller) -> WriteContext:
    settings = get_settings(request)
    return WriteContext(
        actor=caller.actor(),
        request_id=request_id(request),
        client=(request.headers.get("user-agent") or "")[:200] or None,
        limits=limits(settings),
        max_reason_length=settings.max_reason_length,
    )


def limits(settings: Settings) -> Limits:
    return Limits(
        max_bytes=settings.max_document_bytes,
        max_keys=settings.max_document_keys,
        max_depth=settings.max_document_depth,
    )
