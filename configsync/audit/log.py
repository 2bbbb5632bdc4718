"""Signed checkpoints of the log's Merkle tree (C2SP tlog-checkpoint, Ed25519 signed notes).

A checkpoint says "the log named <origin> had <size> events and this root". Signed by the log's
key and kept where the database's operator cannot rewrite it (the checkpoint file, a witness
that the hook ships it to, an auditor's disk), it lets anybody check later that the log still
extends it: configsync.logverify does that with nothing of ConfigSync but itself.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import BigInteger, String, Text, insert, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from configsync.db import Base, UTCDateTime, utcnow
from configsync.errors import ConfigSyncError
from configsync.logverify import ED25519, key_id
from configsync.settings import Settings
from projections import merkle

log = logging.getLogger(__name__)


class CheckpointRow(Base):
    __tablename__ = "log_checkpoints"

    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[str] = mapped_column(String(64))  # hex
    note: Mapped[str] = mapped_column(Text)
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class NoSigningKey(ConfigSyncError):
    status_code = 503


class LogSigner:
    """The log's Ed25519 key, its C2SP verifier key, and how a checkpoint note is signed."""

    def __init__(self, origin: str, seed_base64: str) -> None:
        try:
            seed = base64.b64decode(seed_base64, validate=True)
            self._key = Ed25519PrivateKey.from_private_bytes(seed)
        except ValueError:
            raise NoSigningKey(
                "CONFIGSYNC_LOG_SIGNING_KEY is not the base64 of a 32-byte Ed25519 seed"
            ) from None
        self.origin = origin
        self._public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._key_id = key_id(origin, self._public)

    @classmethod
    def from_settings(cls, settings: Settings) -> LogSigner:
        try:
            return cls(settings.log_origin, settings.log_key())
        except ConfigSyncError as exc:
            raise NoSigningKey(exc.detail) from None

    def verifier_key(self) -> str:
        encoded = base64.b64encode(ED25519 + self._public).decode()
        return f"{self.origin}+{self._key_id.hex()}+{encoded}"

    def sign(self, size: int, root: bytes) -> str:
        body = f"{self.origin}\n{size}\n{base64.b64encode(root).decode()}\n"
        signature = base64.b64encode(self._key_id + self._key.sign(body.encode())).decode()
        return f"{body}\n\u2014 {self.origin} {signature}\n"


@dataclass(frozen=True, slots=True)
class Signed:
    tree_size: int
    root_hash: str
    note: str
    signed_at: datetime


def latest(session: Session) -> Signed | None:
    row = session.execute(
        select(CheckpointRow).order_by(CheckpointRow.tree_size.desc()).limit(1)
    ).scalar_one_or_none()
    return Signed(row.tree_size, row.root_hash, row.note, row.signed_at) if row else None


@dataclass
class CheckpointClock:
    """The earliest moment a checkpoint can next be due, as far as one process has seen: the
    last checkpoint it found or signed, plus the interval. Until then `sign_checkpoint` needs
    no look at the database (the worker asks after every catch-up, tens of times a second under
    write load). Another process signing meanwhile only moves the real moment later."""

    not_before: datetime | None = None

    def waiting(self) -> bool:
        return self.not_before is not None and utcnow() < self.not_before


def sign_checkpoint(
    session: Session,
    signer: LogSigner,
    *,
    min_interval: timedelta | None = None,
    clock: CheckpointClock | None = None,
) -> Signed | None:
    """Sign the tree as far as it reaches, if it grew since the last checkpoint (and, with
    `min_interval`, if that long has passed); the new checkpoint, or None. A `clock` learns
    when the last checkpoint was signed, if it is not due yet (the caller, which asks the clock
    before coming here, tells it of a new one once that is committed)."""
    size = merkle.tree_size(session)
    previous = latest(session)
    if size == 0 or (previous is not None and previous.tree_size >= size):
        return None
    if min_interval and previous and utcnow() - previous.signed_at < min_interval:
        if clock is not None:
            clock.not_before = previous.signed_at + min_interval
        return None
    root = merkle.root(session, size)
    signed = Signed(size, root.hex(), signer.sign(size, root), utcnow())
    session.execute(
        insert(CheckpointRow).values(
            tree_size=size, root_hash=signed.root_hash, note=signed.note, signed_at=signed.signed_at
        )
    )
    return signed


def publish(signed: Signed, settings: Settings) -> None:
    """Append a checkpoint to the file outside the database, and hand it to the hook."""
    path = Path(settings.checkpoint_log)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(signed.note + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    if settings.checkpoint_hook:
        try:
            subprocess.run(  # an operator's own command, from the settings
                settings.checkpoint_hook,
                shell=True,
                input=signed.note,
                text=True,
                timeout=30,
                check=True,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            log.warning("the checkpoint hook failed (the checkpoint is kept): %s", exc)
