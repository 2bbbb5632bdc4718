"""People (`users`), who owns each service (`services`) and service credentials (`api_keys`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from configsync.db import Base, UTCDateTime, utcnow


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    # Optional: accounts made by the original implementation's /auth/register have one, and log
    # in with it as well as with their email.
    username: Mapped[str | None] = mapped_column(String(150), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="user")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Tokens carry the generation they were issued in; changing the password moves it on, so
    # every token issued before stops at once, in every API process.
    token_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class RevokedTokenRow(Base):
    """Tokens logged out before they expire (by `jti`); a row may go once its token expired."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class ServiceRow(Base):
    """A service and its owner: the first person to write it, unless an admin reassigns it."""

    __tablename__ = "services"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    owner_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Key paths the owner declared secret (JSON list of lists of keys), beside the patterns.
    secret_paths: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    # SHA-256 of the whole key. Keys carry 256 bits of randomness, so a fast hash is enough
    # (nothing to brute-force) and lets every request be checked without a slow KDF.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    service: Mapped[str] = mapped_column(
        String(63), ForeignKey("services.name", ondelete="CASCADE"), index=True
    )
    environment: Mapped[str | None] = mapped_column(String(63))
    permission: Mapped[str] = mapped_column(String(8))
    created_by: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # auth.usage
