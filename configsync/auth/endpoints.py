"""HTTP endpoints for people and keys: /auth/*, /v1/me, /v1/users, /v1/api-keys."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError

from configsync.auth import service
from configsync.auth.deps import AdminDep, AuthenticatorDep, CallerDep, ThrottleDep
from configsync.auth.models import ApiKeyRow, UserRow
from configsync.auth.permissions import Caller
from configsync.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    KeyMe,
    LoggedOut,
    Login,
    PasswordChange,
    PersonMe,
    Register,
    Registered,
    SignedUp,
    Signup,
    Token,
    UserCreate,
    UserOut,
    UserUpdate,
)
from configsync.deps import SessionDep, SettingsDep
from configsync.errors import (
    AlreadyExists,
    AlreadyRegistered,
    Forbidden,
    InvalidInput,
)
from configsync.events import format_instant
from configsync.http import errors, json_response

router = APIRouter(tags=["people and keys"], responses=errors(401, 413, 422, 503))


async def login_form(request: Request) -> tuple[str, str]:
    """Email and password from a JSON body or an OAuth2 password form."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        email, password = form.get("username"), form.get("password")
        if not isinstance(email, str) or not isinstance(password, str):
            raise InvalidInput("the login form needs 'username' and 'password'")
        return email, password
    try:
        body = Login.model_validate(json.loads(await request.body()))
    except (ValueError, RecursionError, ValidationError) as exc:
        raise InvalidInput(f"the body must be JSON with email and password: {exc}") from None
    return body.email, body.password


LoginForm = Annotated[tuple[str, str], Depends(login_form)]


def _user(user: UserRow) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "username": user.username,
        "role": user.role,
        "is_active": user.is_active,
        "created_at": format_instant(user.created_at),
    }


def _key(row: ApiKeyRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "service": row.service,
        "environment": row.environment,
        "permission": row.permission,
        "expires_at": format_instant(row.expires_at) if row.expires_at else None,
        "created_at": format_instant(row.created_at),
        "revoked": row.revoked_at is not None,
        "last_used_at": format_instant(row.last_used_at) if row.last_used_at else None,
    }


def _signup_open(settings: Any) -> None:
    if not settings.signup_open:
        raise Forbidden(
            "sign-up is closed on this server: an admin creates accounts "
            "(POST /v1/users, or `configsync users create`)"
        )


@router.post("/auth/signup", status_code=201, response_model=SignedUp, responses=errors(403, 409))
def signup(body: Signup, session: SessionDep, settings: SettingsDep) -> Response:
    """Create an account (role `user`), unless sign-up is closed (then admins create them)."""
    _signup_open(settings)
    user = service.signup(session, body.email, body.password)
    return json_response({"id": user.id, "email": user.email, "role": user.role}, status=201)


@router.post("/auth/register", response_model=Registered, responses=errors(400, 403))
def register(body: Register, session: SessionDep, settings: SettingsDep) -> Response:
    """Create an account with a username (original implementation): it logs in with the
    username or the email. Only the role `user`: other roles are an admin's to give."""
    _signup_open(settings)
    if body.role not in (None, "user"):
        raise Forbidden(f"only an admin can give the role {body.role!r} (PATCH /v1/users/{{id}})")
    try:
        user = service.signup(session, body.email, body.password, username=body.username)
    except AlreadyExists as exc:
        raise AlreadyRegistered(exc.detail) from None
    return json_response(
        {"id": user.id, "username": user.username, "email": user.email, "role": user.role}
    )


@router.post(
    "/auth/login",
    response_model=Token,
    responses=errors(429),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": Login.model_json_schema()},
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "required": ["username", "password"],
                        "properties": {
                            "username": {"type": "string"},
                            "password": {"type": "string"},
                        },
                    }
                },
            },
        }
    },
)
def login(
    credentials: LoginForm,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    throttle: ThrottleDep,
) -> Response:
    """Exchange email and password for an access token (JSON body or OAuth2 password form).

    Failed logins are throttled per account and per client address (429 with Retry-After)."""
    email, password = credentials
    address = request.client.host if request.client else "unknown"
    return _token(service.log_in(session, throttle, email, password, address), settings)


def _token(user: UserRow, settings: Any) -> Response:
    token, lifetime = service.access_token(user, settings)
    return json_response({"access_token": token, "token_type": "bearer", "expires_in": lifetime})


def _person(caller: Caller) -> None:
    if not caller.is_person or not caller.token_id:
        raise Forbidden("only a person's access token can do this (API keys are revoked)")


@router.post("/auth/logout", response_model=LoggedOut, responses=errors(403))
def logout(session: SessionDep, caller: CallerDep, settings: SettingsDep) -> Response:
    """Revoke the access token presented: it stops working at once, in every API process.
    (Answers as the original implementation did.)"""
    _person(caller)
    assert caller.token_id is not None
    service.log_out(session, caller.token_id, settings)
    return json_response({"msg": "logged out"})


@router.post("/auth/password", response_model=Token, responses=errors(401, 403, 422))
def change_password(
    body: PasswordChange, session: SessionDep, caller: CallerDep, settings: SettingsDep
) -> Response:
    """Change your password: every token issued before (this one included) stops working; the
    answer carries a new one."""
    _person(caller)
    user = service.change_password(
        session, service.active_user(session, caller.id), body.current_password, body.new_password
    )
    return _token(user, settings)


@router.get("/v1/me", response_model=PersonMe | KeyMe)
def me(session: SessionDep, caller: CallerDep) -> Response:
    """Who the caller is: a person, or the API key it authenticated with."""
    if caller.is_person:
        return json_response({"kind": "user", **_user(service.active_user(session, caller.id))})
    return json_response(
        {
            "kind": caller.kind,
            "id": caller.id,
            "name": caller.name,
            "service": caller.service,
            "environment": caller.environment,
            "permission": caller.permission,
        }
    )


@router.get("/v1/users", response_model=list[UserOut], responses=errors(403))
def list_users(session: SessionDep, _admin: AdminDep) -> Response:
    """Every account (admins only)."""
    return json_response([_user(u) for u in service.list_users(session)])


@router.post("/v1/users", status_code=201, response_model=UserOut, responses=errors(403, 409))
def create_user(body: UserCreate, session: SessionDep, _admin: AdminDep) -> Response:
    """Create an account with a role (admins only; works whether sign-up is open or closed)."""
    user = service.signup(session, body.email, body.password, role=body.role)
    return json_response(_user(user), status=201)


@router.patch("/v1/users/{user_id}", response_model=UserOut, responses=errors(403, 404))
def update_user(user_id: str, body: UserUpdate, session: SessionDep, caller: AdminDep) -> Response:
    """Change an account's role or switch it off (admins only); takes effect on its next request."""
    user = service.update_user(session, caller, user_id, role=body.role, is_active=body.is_active)
    return json_response(_user(user))


@router.post(
    "/v1/api-keys", status_code=201, response_model=ApiKeyCreated, responses=errors(403, 404)
)
def create_api_key(body: ApiKeyCreate, session: SessionDep, caller: CallerDep) -> Response:
    """Create a key for one service (the owner or an admin); the key is shown only here."""
    row, key = service.create_api_key(
        session,
        caller,
        name=body.name,
        service=body.service,
        environment=body.environment,
        permission=body.permission,
        expires_in_days=body.expires_in_days,
    )
    out = _key(row)
    out.pop("revoked")
    out.pop("last_used_at")
    return json_response({**out, "key": key}, status=201)


@router.get("/v1/api-keys", response_model=list[ApiKeyOut], responses=errors(403))
def list_api_keys(session: SessionDep, caller: CallerDep) -> Response:
    """Keys of the services the caller owns (all keys for admins); never the key itself."""
    return json_response([_key(row) for row in service.list_api_keys(session, caller)])


@router.delete("/v1/api-keys/{key_id}", status_code=204, responses=errors(403, 404))
def revoke_api_key(
    key_id: str, session: SessionDep, caller: CallerDep, authenticator: AuthenticatorDep
) -> Response:
    """Revoke a key: it stops working on its next request."""
    service.revoke_api_key(session, caller, key_id, forget=authenticator.forget)
    return Response(status_code=204)
