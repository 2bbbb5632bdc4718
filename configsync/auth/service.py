"""People and API keys: sign-up, login, roles, keys. Functions never commit."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from configsync.auth import tokens
from configsync.auth.models import ApiKeyRow, RevokedTokenRow, ServiceRow, UserRow
from configsync.auth.passwords import check_password_rules, hash_password, verify_password
from configsync.auth.permissions import (
    ADMIN,
    ROLES,
    USER,
    Caller,
    authorize_key_management,
    authorize_owner_or_admin,
)
from configsync.auth.throttle import LoginThrottle
from configsync.db import after_commit, insert_missing, utcnow
from configsync.domain.names import validate_name
from configsync.errors import AlreadyExists, Forbidden, InvalidInput, NotFound, Unauthorized
from configsync.feed import KeyRevoked, notify
from configsync.settings import Settings

KEY_PREFIX = "cs_"
SHOWN_PREFIX_LENGTH = len(KEY_PREFIX) + 8


def normalize_email(email: str) -> str:
    return email.strip().lower()


def signup(
    session: Session, email: str, password: str, *, role: str = USER, username: str | None = None
) -> UserRow:
    check_password_rules(password)
    email = normalize_email(email)
    if session.scalar(select(UserRow.id).where(UserRow.email == email)) is not None:
        raise AlreadyExists(f"an account with email {email} already exists")
    if username is not None and _by_username(session, username) is not None:
        raise AlreadyExists(f"Username already exists: {username!r}")
    user = UserRow(
        id=str(uuid.uuid4()),
        email=email,
        username=username,
        password_hash=hash_password(password),
        role=role,
        is_active=True,
        created_at=utcnow(),
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError:  # the same email or username signed up concurrently
        raise AlreadyExists(f"an account with email {email} or that username exists") from None
    return user


def _by_username(session: Session, username: str) -> UserRow | None:
    return session.scalar(select(UserRow).where(UserRow.username == username))


def authenticate(session: Session, login: str, password: str) -> UserRow:
    """The account whose email (or, without an @, username) and password these are."""
    if "@" in login:
        user = session.scalar(select(UserRow).where(UserRow.email == normalize_email(login)))
    else:
        user = _by_username(session, login.strip())
    if not verify_password(password, user.password_hash if user else None) or user is None:
        raise Unauthorized("incorrect email or password")
    if not user.is_active:
        raise Unauthorized("incorrect email or password")
    return user


def active_user(session: Session, user_id: str) -> UserRow:
    user = session.get(UserRow, user_id)
    if user is None or not user.is_active:
        raise Unauthorized("invalid or expired token")
    return user


@dataclass(frozen=True, slots=True)
class TokenHolder:
    id: str
    email: str
    role: str


# Built once: executed on the connection with its parameters, they skip the ORM's per-call
# statement building and compiling. Every request a person makes reads its token's holder, and
# every config write the owner of its service with it, in one statement: on PostgreSQL a
# function whose plan the connection keeps (migration 0015), elsewhere a join. A NULL service
# reads no service.
_TOKEN_HOLDER_FUNCTION = text(
    "SELECT o_email AS email, o_role AS role, o_is_active AS is_active,"
    " o_token_generation AS token_generation, o_revoked AS revoked,"
    " o_service_name AS service_name, o_owner_id AS owner_id"
    " FROM configsync_token_holder(:user_id, :jti, :service)"
)
_TOKEN_HOLDER_JOIN = (
    select(
        UserRow.email,
        UserRow.role,
        UserRow.is_active,
        UserRow.token_generation,
        select(RevokedTokenRow.jti)
        .where(RevokedTokenRow.jti == bindparam("jti"))
        .exists()
        .label("revoked"),
        ServiceRow.name.label("service_name"),
        ServiceRow.owner_id,
    )
    .outerjoin_from(UserRow, ServiceRow, ServiceRow.name == bindparam("service"))
    .where(UserRow.id == bindparam("user_id"))
)
_OWNER = select(ServiceRow.owner_id).where(ServiceRow.name == bindparam("service"))
# session.info's entry for owners read ahead of service_owner: {service: (exists, owner)}.
_KNOWN_OWNERS = "configsync.known_owners"


def token_user(session: Session, claims: Any, *, owner_of: str | None = None) -> TokenHolder:
    """The account a token speaks for, if the token still stands: the account is active, the
    token is of its current generation (no password change since) and was not logged out.

    With `owner_of`, a service's name, the same statement reads that service's owner, and
    `service_owner` answers it from there for the rest of this session (a config write's
    request: its caller and its service's owner in one round trip)."""
    connection = session.connection()
    statement = (
        _TOKEN_HOLDER_FUNCTION if connection.dialect.name == "postgresql" else _TOKEN_HOLDER_JOIN
    )
    params = {"user_id": claims.user_id, "jti": claims.token_id or "", "service": owner_of}
    row = connection.execute(statement, params).first()
    if row is not None and owner_of is not None:
        owners = session.info.setdefault(_KNOWN_OWNERS, {})
        owners[owner_of] = (row.service_name is not None, row.owner_id)
    return token_holder(claims, row)


def token_holder(claims: Any, row: Any) -> TokenHolder:
    """The account of `row` (email, role, is_active, token_generation, revoked; None: no such
    account) if the token of `claims` still stands for it; Unauthorized if not."""
    if row is None or not row.is_active:
        raise Unauthorized("invalid or expired token")
    if claims.generation != row.token_generation:
        raise Unauthorized("this token was revoked by a password change; log in again")
    if row.revoked:
        raise Unauthorized("this token was logged out; log in again")
    return TokenHolder(claims.user_id, row.email, row.role)


# For many writes at once (configsync.configs.deferred, PostgreSQL): migration 0017's function
# reads, for each asked (user, jti, service), the account (NULL when no user was asked or there
# is no such account) and the service's owner (NULL when there is no such service), each by key,
# beside the batch's configs' states.
def holders_params(asked: Sequence[tuple[str | None, str | None, str]]) -> dict[str, Any]:
    """The holders' parameters of configsync_authorize_lock_and_read (migration 0017) for each
    (user id or None, token id or None, service)."""
    users, jtis, services = (list(column) for column in zip(*asked, strict=True))
    return {"users": users, "jtis": jtis, "services": services}


def log_in(
    session: Session, throttle: LoginThrottle, login: str, password: str, address: str
) -> UserRow:
    """`authenticate`, with failed attempts throttled per account and per client address (the
    API's /auth/login and the console's sign-in both come here)."""
    account = normalize_email(login)
    throttle.check(account, address)
    try:
        return authenticate(session, login, password)
    except Unauthorized:
        throttle.failed(account, address)
        raise


def access_token(user: UserRow, settings: Settings) -> tuple[str, int]:
    """A signed access token for `user` and its lifetime in seconds."""
    return tokens.issue(
        user.id,
        user.role,
        key=settings.signing_key(),
        minutes=settings.access_token_minutes,
        generation=user.token_generation,
    )


def log_out(session: Session, token_id: str, settings: Settings) -> None:
    """Revoke one access token, for as long as it could otherwise still be used."""
    until = utcnow() + timedelta(minutes=settings.access_token_minutes)
    revoke_token(session, token_id, until)


def revoke_token(session: Session, token_id: str, expires_at: datetime) -> None:
    """Log a token out everywhere (every API process reads this table for every person)."""
    session.execute(delete(RevokedTokenRow).where(RevokedTokenRow.expires_at < utcnow()))
    insert_missing(
        session, RevokedTokenRow, [{"jti": token_id, "expires_at": expires_at}], key=["jti"]
    )


def change_password(session: Session, user: UserRow, current: str, new: str) -> UserRow:
    """Set a new password; every token issued before stops working."""
    if not verify_password(current, user.password_hash):
        raise Unauthorized("the current password is not right")
    check_password_rules(new)
    user.password_hash = hash_password(new)
    user.token_generation += 1
    session.flush()
    return user


def create_admin(session: Session, email: str, password: str) -> tuple[UserRow, bool]:
    """Make `email` an admin: a new account, or an existing one promoted (password unchanged)."""
    email = normalize_email(email)
    user = session.scalar(select(UserRow).where(UserRow.email == email))
    if user is None:
        return signup(session, email, password, role=ADMIN), True
    user.role = ADMIN
    user.is_active = True
    session.flush()
    return user, False


def list_users(session: Session) -> list[UserRow]:
    return list(session.scalars(select(UserRow).order_by(UserRow.created_at, UserRow.email)))


def update_user(
    session: Session, caller: Caller, user_id: str, *, role: str | None, is_active: bool | None
) -> UserRow:
    user = session.get(UserRow, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    if role is not None:
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
        if user.id == caller.id and role != ADMIN:
            raise Forbidden("admins cannot demote themselves; ask another admin")
        user.role = role
    if is_active is not None:
        if user.id == caller.id and not is_active:
            raise Forbidden("admins cannot deactivate themselves; ask another admin")
        user.is_active = is_active
    session.flush()
    return user


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def service_owner(session: Session, service: str) -> tuple[bool, str | None]:
    """(does the service exist, who owns it)."""
    known = session.info.get(_KNOWN_OWNERS)
    if known is not None and service in known:
        return known[service]
    row = session.connection().execute(_OWNER, {"service": service}).first()
    return (row is not None, row.owner_id if row else None)


def create_api_key(
    session: Session,
    caller: Caller,
    *,
    name: str,
    service: str,
    environment: str | None,
    permission: str,
    expires_in_days: int | None,
) -> tuple[ApiKeyRow, str]:
    validate_name("service", service)
    if environment is not None:
        validate_name("environment", environment)
    exists, owner = service_owner(session, service)
    authorize_owner_or_admin(caller, service, owner, exists, "manage API keys")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = ApiKeyRow(
        id=str(uuid.uuid4()),
        name=name,
        prefix=key[:SHOWN_PREFIX_LENGTH],
        key_hash=hash_key(key),
        service=service,
        environment=environment,
        permission=permission,
        created_by=caller.id,
        created_at=now,
        expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
        revoked_at=None,
    )
    session.add(row)
    session.flush()
    return row, key


def list_api_keys(session: Session, caller: Caller, service: str | None = None) -> list[ApiKeyRow]:
    authorize_key_management(caller)
    query = select(ApiKeyRow).order_by(ApiKeyRow.created_at)
    if service is not None:
        query = query.where(ApiKeyRow.service == service)
    if not caller.is_admin:
        owned = select(ServiceRow.name).where(ServiceRow.owner_id == caller.id)
        query = query.where(ApiKeyRow.service.in_(owned))
    return list(session.scalars(query))


def revoke_api_key(
    session: Session, caller: Caller, key_id: str, *, forget: Callable[[str], None]
) -> ApiKeyRow:
    """Revoke a key. Other processes hear of it through the change feed; `forget(key_hash)`
    drops it from this process's cache once the revocation has committed."""
    row = session.get(ApiKeyRow, key_id)
    if row is None:
        authorize_key_management(caller)
        raise NotFound(f"API key {key_id} not found")
    exists, owner = service_owner(session, row.service)
    try:
        authorize_owner_or_admin(caller, row.service, owner, exists, "manage API keys")
    except NotFound:
        raise NotFound(f"API key {key_id} not found") from None
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
        notify(session, [KeyRevoked(row.key_hash)])
        key_hash = row.key_hash
        after_commit(session, lambda: forget(key_hash))
    return row


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    name: str
    service: str
    environment: str | None
    permission: str
    expires_at: datetime | None
    revoked: bool

    def usable(self) -> bool:
        """Not revoked and not expired (the clock is read only for a key that expires: a
        cached read pays for no clock otherwise)."""
        if self.revoked:
            return False
        return self.expires_at is None or self.expires_at > utcnow()

    def caller(self) -> Caller:
        return Caller(
            kind="api_key",
            id=self.id,
            name=self.name,
            service=self.service,
            environment=self.environment,
            permission=self.permission,
        )


def find_key(session: Session, key_hash: str) -> KeyRecord | None:
    row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == key_hash))
    if row is None:
        return None
    return KeyRecord(
        id=row.id,
        name=row.name,
        service=row.service,
        environment=row.environment,
        permission=row.permission,
        expires_at=row.expires_at,
        revoked=row.revoked_at is not None,
    )
