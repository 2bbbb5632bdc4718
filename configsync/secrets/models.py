"""The `secret_keys` table: every data key, wrapped by a master key, and the fingerprint root.

Keys are mutable on purpose, unlike events: rotating the master key re-wraps them, and
destroying a generation empties `wrapped`, after which nothing can open what it sealed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from configsync.db import Base, UTCDateTime, utcnow


class SecretKeyRow(Base):
    __tablename__ = "secret_keys"

    # "{service}/{environment}/{generation}-{random}" for data keys (made only under their
    # stream's lock, so one per generation), FINGERPRINT_ROOT for the one key fingerprints
    # derive from (a fixed id: two processes can never keep two of it).
    id: Mapped[str] = mapped_column(String(160), primary_key=True)
    service: Mapped[str] = mapped_column(String(63), index=True)
    environment: Mapped[str] = mapped_column(String(63))
    generation: Mapped[int] = mapped_column(Integer)
    master_key_id: Mapped[str] = mapped_column(String(16))
    wrapped: Mapped[str | None] = mapped_column(Text)  # None once destroyed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    destroyed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
