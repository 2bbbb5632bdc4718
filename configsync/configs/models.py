"""The `services` table: who owns each service (the first writer, unless an admin reassigns it)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from configsync.db import Base, UTCDateTime, utcnow


class ServiceRow(Base):
    __tablename__ = "services"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    owner_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
