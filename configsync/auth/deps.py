"""Who is calling, and the role checks that need nothing but the caller, as dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer

from configsync.auth.authenticator import Authenticator, credentials
from configsync.auth.permissions import ADMIN, AUDITOR, Caller, require_role
from configsync.auth.throttle import LoginThrottle
from configsync.db import unit_of_work
from configsync.deps import SessionDep, session_factory


def get_authenticator(request: Request) -> Authenticator:
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator


AuthenticatorDep = Annotated[Authenticator, Depends(get_authenticator)]


def get_login_throttle(request: Request) -> LoginThrottle:
    throttle: LoginThrottle = request.app.state.login_throttle
    return throttle


ThrottleDep = Annotated[LoginThrottle, Depends(get_login_throttle)]


# Declared for the OpenAPI document (and so /docs' Authorize button): a bearer token from the
# password flow at /auth/login, or an API key. The credentials themselves are read by
# configsync.auth.authenticator.credentials, which also takes a key as a bearer token.
BearerToken = Annotated[
    str | None, Depends(OAuth2PasswordBearer(tokenUrl="/auth/login", auto_error=False))
]
ApiKeyHeader = Annotated[str | None, Depends(APIKeyHeader(name="X-API-Key", auto_error=False))]


def _noted(request: Request, caller: Caller) -> Caller:
    """The caller, noted in the request's state for the request log (configsync.logs)."""
    request.state.caller = caller.log_name
    return caller


def get_caller(
    request: Request, session: SessionDep, _token: BearerToken, _key: ApiKeyHeader
) -> Caller:
    authenticator = get_authenticator(request)
    creds = credentials(request.headers)
    # An API key known to this process needs no database round trip (writes too, not only the
    # fast path's reads); revocation reaches the cache through the change feed.
    caller = authenticator.cached(creds) or authenticator.resolve(session, creds)
    return _noted(request, caller)


def get_caller_briefly(request: Request, _token: BearerToken, _key: ApiKeyHeader) -> Caller:
    """The caller, from the caches or a session of its own that is closed before the endpoint
    runs: for endpoints that wait (long polls) and must not hold a connection meanwhile."""
    authenticator = get_authenticator(request)
    creds = credentials(request.headers)
    caller = authenticator.cached(creds)
    if caller is not None:
        return _noted(request, caller)
    with unit_of_work(session_factory(request)) as session:
        return _noted(request, authenticator.resolve(session, creds))


CallerDep = Annotated[Caller, Depends(get_caller)]
BriefCallerDep = Annotated[Caller, Depends(get_caller_briefly)]


def get_admin(caller: CallerDep) -> Caller:
    require_role(caller, ADMIN)
    return caller


def get_auditor_or_admin(caller: CallerDep) -> Caller:
    require_role(caller, ADMIN, AUDITOR)
    return caller


AdminDep = Annotated[Caller, Depends(get_admin)]
AuditorOrAdminDep = Annotated[Caller, Depends(get_auditor_or_admin)]
