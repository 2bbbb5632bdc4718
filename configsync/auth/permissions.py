"""Who may do what: the one place that decides.

A caller that may not read a service is told it does not exist (404), exactly as for a service
that does not exist, so names cannot be probed. A caller that may read but not write is told
403: that reveals nothing it does not already know.

`can_read` decides for one config; `readable` is the same rule as a SQL condition, for queries
that list what a caller may read (tests check that the two agree for every role and key scope).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, false, true

from configsync.domain.actor import Actor
from configsync.errors import Forbidden, NotFound

ADMIN, USER, AUDITOR = "admin", "user", "auditor"
ROLES = (ADMIN, USER, AUDITOR)
READ, WRITE = "read", "write"


@dataclass(frozen=True, slots=True)
class Caller:
    kind: str  # "user" | "api_key" | "legacy_key"
    id: str
    name: str
    role: str | None = None  # people
    service: str | None = None  # API keys: the one service they are for
    environment: str | None = None  # API keys: None means every environment
    permission: str | None = None  # API keys: "read" | "write"
    token_id: str | None = None  # people: the `jti` of the token presented (for logout)

    @property
    def is_person(self) -> bool:
        return self.kind == "user"

    @property
    def is_admin(self) -> bool:
        return self.is_person and self.role == ADMIN

    def actor(self) -> Actor:
        return Actor(kind=self.kind, id=self.id, name=self.name)

    @property
    def log_name(self) -> str:
        """Who, for the request log: kind and id (never a token, a key or an email)."""
        return f"{self.kind}:{self.id}"


def _key_covers(caller: Caller, service: str, environment: str | None) -> bool:
    return caller.service == service and (
        caller.environment is None or environment is None or caller.environment == environment
    )


def can_read(caller: Caller, service: str, environment: str | None, owner_id: str | None) -> bool:
    if caller.kind == "legacy_key":
        return True
    if caller.is_person:
        return caller.role in (ADMIN, AUDITOR) or (owner_id is not None and owner_id == caller.id)
    return _key_covers(caller, service, environment)


def readable(caller: Caller, service: Any, environment: Any, owner_id: Any) -> ColumnElement[bool]:
    """`can_read` as a SQL condition over the given service, environment and owner columns."""
    if caller.kind == "legacy_key":
        return true()
    if caller.is_person:
        if caller.role in (ADMIN, AUDITOR):
            return true()
        return and_(owner_id.is_not(None), owner_id == caller.id)
    if caller.kind != "api_key" or caller.service is None:
        return false()
    if caller.environment is None:
        return service == caller.service
    return and_(service == caller.service, environment == caller.environment)


def sees_secrets(caller: Caller) -> bool:
    """Whether a reader of a config gets its secret values in plain text from GET: its owner,
    admins and API keys do (services need the values to run); auditors never do. (Who may read
    the config at all is `can_read`'s; every other answer masks secrets for everyone.)"""
    return not (caller.is_person and caller.role == AUDITOR)


def can_read_history(caller: Caller, owner_id: str | None) -> bool:
    """History, diffs and the audit trail are for people: owners, admins and auditors."""
    return caller.is_person and (
        caller.role in (ADMIN, AUDITOR) or (owner_id is not None and owner_id == caller.id)
    )


def authorize_read(
    caller: Caller, service: str, environment: str | None, owner_id: str | None, exists: bool
) -> None:
    if not exists or not can_read(caller, service, environment, owner_id):
        raise NotFound(f"service {service!r} not found")


def authorize_write(
    caller: Caller, service: str, environment: str, owner_id: str | None, exists: bool
) -> None:
    """Raise unless `caller` may change `service`/`environment` (creating it if it is new)."""
    if not exists:
        # A new service: any person but an auditor may create it and so becomes its owner.
        if caller.is_person and caller.role in (ADMIN, USER):
            return
        if caller.is_person:
            raise Forbidden("auditors read; they cannot write")
        raise NotFound(f"service {service!r} not found")
    authorize_read(caller, service, environment, owner_id, exists)
    if caller.is_person:
        if caller.role == AUDITOR:
            raise Forbidden("auditors read; they cannot write")
        return  # an admin, or the owner (authorize_read let only those through)
    if caller.permission != WRITE:
        raise Forbidden("this API key may only read")


def authorize_history(caller: Caller, service: str, owner_id: str | None, exists: bool) -> None:
    """History and diffs: the owner, admins and auditors (API keys serve configs, not history)."""
    authorize_read(caller, service, None, owner_id, exists)
    if not can_read_history(caller, owner_id):
        raise Forbidden("history is for the service's owner, admins and auditors")


def require_role(caller: Caller, *roles: str) -> None:
    """Only people with one of `roles` (admins, auditors...) may go on."""
    if not (caller.is_person and caller.role in roles):
        raise Forbidden(f"only {' and '.join(r + 's' for r in roles)} may do this")


def authorize_key_management(caller: Caller) -> None:
    """Listing and revoking keys: people who may own services (users, admins)."""
    if not caller.is_person:
        raise Forbidden("API keys cannot manage API keys")
    if caller.role == AUDITOR:
        raise Forbidden("auditors cannot manage API keys")


def authorize_owner_or_admin(
    caller: Caller, service: str, owner_id: str | None, exists: bool, what: str
) -> None:
    """For managing a service (its keys, rollback): its owner or an admin, and only people."""
    authorize_read(caller, service, None, owner_id, exists)
    if not caller.is_person:
        raise Forbidden(f"API keys cannot {what}")
    if caller.role == AUDITOR:
        raise Forbidden(f"auditors cannot {what}")
    if not (caller.is_admin or owner_id == caller.id):
        raise NotFound(f"service {service!r} not found")
