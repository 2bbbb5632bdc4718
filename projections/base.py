"""What every projection shares: the checkpoint table.

A checkpoint is the position of the last event an asynchronous projection has applied. It is
written in the same transaction as the projection's rows, so the two can never disagree.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from configsync.db import Base, UTCDateTime, upsert, utcnow


class CheckpointRow(Base):
    __tablename__ = "projection_checkpoints"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


def checkpoint(session: Session, name: str) -> int:
    found = session.scalar(select(CheckpointRow.position).where(CheckpointRow.name == name))
    return int(found or 0)


def move_checkpoint(session: Session, name: str, position: int) -> None:
    """Record that `name` has applied everything up to `position`; never moves backwards."""
    upsert(
        session,
        CheckpointRow,
        {"name": name, "position": position, "updated_at": utcnow()},
        key=["name"],
        update=["position", "updated_at"],
        where=CheckpointRow.position < position,
    )
