"""Request and response bodies of the people and key endpoints."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from configsync.http import Out


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Signup(Body):
    email: EmailStr
    password: str = Field(description="8 to 72 bytes")


class Register(BaseModel):
    """POST /auth/register of the original implementation (extra fields ignored, as there)."""

    username: str = Field(pattern=r"^[A-Za-z0-9._-]{1,150}$", description="letters, digits, . _ -")
    email: EmailStr
    password: str = Field(description="8 to 72 bytes")
    role: Literal["admin", "user", "auditor"] | None = Field(
        None, description="only `user`: an admin gives other roles (PATCH /v1/users/{id})"
    )


class Registered(Out):
    id: str
    username: str
    email: str
    role: str


class Login(Body):
    email: str
    password: str


class Token(Out):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class UserOut(Out):
    id: str
    email: str
    username: str | None = None
    role: str
    is_active: bool
    created_at: str


class SignedUp(Out):
    id: str
    email: str
    role: str


class LoggedOut(Out):
    msg: str


class PasswordChange(Body):
    current_password: str
    new_password: str = Field(description="8 to 72 bytes")


class UserCreate(Body):
    email: EmailStr
    password: str = Field(description="8 to 72 bytes")
    role: Literal["admin", "user", "auditor"] = "user"


class UserUpdate(Body):
    role: Literal["admin", "user", "auditor"] | None = None
    is_active: bool | None = None


class ApiKeyCreate(Body):
    name: str = Field(min_length=1, max_length=100)
    service: str
    environment: str | None = None
    permission: Literal["read", "write"]
    expires_in_days: int | None = Field(None, ge=1, le=3650)


class ApiKeyOut(Out):
    id: str
    name: str
    prefix: str
    service: str
    environment: str | None
    permission: str
    expires_at: str | None
    created_at: str
    revoked: bool
    last_used_at: str | None = Field(
        None, description="when a request last presented it (written every few seconds)"
    )


class ApiKeyCreated(Out):
    id: str
    name: str
    key: str = Field(description="shown this once; only its hash is kept")
    prefix: str
    service: str
    environment: str | None
    permission: str
    expires_at: str | None
    created_at: str


class PersonMe(UserOut):
    kind: Literal["user"]


class KeyMe(Out):
    kind: Literal["api_key", "legacy_key"]
    id: str
    name: str
    service: str | None
    environment: str | None
    permission: str | None
