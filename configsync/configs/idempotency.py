"""Idempotent retries: a write sent again with the same `Idempotency-Key` returns its first
outcome and appends nothing.

The key's row is written in the same transaction as the event it stands for (the group commit's
when there is one), so a write whose commit happened although its client was told otherwise
(a database restart at the commit) is recognised when retried, on any API process, after any
restart, for `CONFIGSYNC_IDEMPOTENCY_KEY_HOURS`. A write that changed nothing keeps its key
in the request's own transaction. Concurrent requests with one key are serialized by a lock
on the key, so the second waits for the first and then replays it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Boolean, Integer, String, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from configsync.db import Base, UTCDateTime, upsert, utcnow
from configsync.errors import InvalidInput

MAX_KEY_LENGTH = 255


class IdempotencyRow(Base):
    __tablename__ = "idempotency_keys"

    caller_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    stream: Mapped[str] = mapped_column(String(160))
    version: Mapped[int] = mapped_column(Integer)
    changed: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A write's key, its caller, and what makes two requests "the same request"."""

    caller_id: str
    key: str
    fingerprint: str
    lifetime: timedelta

    @classmethod
    def of(
        cls, caller_id: str, key: str, request: tuple[str, str, bytes, str], lifetime: timedelta
    ) -> IdempotencyKey:
        """`request`: method, path, body, If-Match."""
        if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
            raise InvalidInput(
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters"
            )
        method, path, body, if_match = request
        digest = hashlib.sha256()
        for part in (method.encode(), path.encode(), if_match.encode(), body):
            digest.update(len(part).to_bytes(8, "big") + part)
        return cls(caller_id, key, digest.hexdigest(), lifetime)

    def row(self, stream: str, version: int, changed: bool) -> dict[str, object]:
        now = utcnow()
        return {
            "caller_id": self.caller_id,
            "key": self.key,
            "fingerprint": self.fingerprint,
            "stream": stream,
            "version": version,
            "changed": changed,
            "created_at": now,
            "expires_at": now + self.lifetime,
        }


@dataclass(frozen=True, slots=True)
class Used:
    """The outcome a key was first used for."""

    stream: str
    version: int
    changed: bool


def claim(session: Session, key: IdempotencyKey) -> Used | None:
    """Lock the key for this transaction; its first outcome if it was used for this request.

    Raises InvalidInput when the key was used for another request.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
            {"key": f"idempotency:{key.caller_id}:{key.key}"},
        )
    # (On SQLite the transaction's BEGIN IMMEDIATE already holds every writer off.)
    found = session.execute(
        select(
            IdempotencyRow.fingerprint,
            IdempotencyRow.stream,
            IdempotencyRow.version,
            IdempotencyRow.changed,
        ).where(
            IdempotencyRow.caller_id == key.caller_id,
            IdempotencyRow.key == key.key,
            IdempotencyRow.expires_at > utcnow(),
        )
    ).first()
    if found is None:
        return None
    if found.fingerprint != key.fingerprint:
        raise InvalidInput(
            "this Idempotency-Key was used for a different request; use a new key for a new write"
        )
    return Used(found.stream, found.version, found.changed)


def remember(session: Session, rows: list[dict[str, object]]) -> None:
    """Record keys with the outcomes they stand for (an expired row of the same key is replaced)."""
    if rows:
        upsert(
            session,
            IdempotencyRow,
            rows,
            key=["caller_id", "key"],
            update=["fingerprint", "stream", "version", "changed", "created_at", "expires_at"],
            where=IdempotencyRow.expires_at <= utcnow(),
        )
