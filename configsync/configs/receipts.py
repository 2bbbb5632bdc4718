"""Read receipts: which version of a config each API key last fetched, and when.

Noted in memory when a current read is answered (the cached fast path included) and written by a
thread every few seconds (configsync.background.Noted), so the hot path pays no database write;
the list of clients adds what this process has not written yet. A receipt may be a few seconds
late in another process; none is lost while the process runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ForeignKey, Integer, String, and_, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from configsync.auth.models import ApiKeyRow
from configsync.auth.permissions import Caller
from configsync.background import Noted
from configsync.db import Base, UTCDateTime, upsert

Config = tuple[str, str, str]  # API key id, service, environment


class ReadReceiptRow(Base):
    __tablename__ = "read_receipts"

    key_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    service: Mapped[str] = mapped_column(String(63), primary_key=True)
    environment: Mapped[str] = mapped_column(String(63), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    read_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReadReceipts(Noted[Config, tuple[int, float]]):
    what = "read receipts"

    def __init__(self, sessions: sessionmaker[Session], interval: float) -> None:
        super().__init__(sessions, interval, "configsync-read-receipts")

    def read(self, caller: Caller, service: str, environment: str, version: int) -> None:
        """An API key was answered the current `version` (200, or 304: it has it)."""
        if caller.kind == "api_key":
            self.note((caller.id, service, environment), (version, time.time()))

    def write(self, session: Session, noted: dict[Config, tuple[int, float]]) -> None:
        rows = [
            {
                "key_id": key_id,
                "service": service,
                "environment": environment,
                "version": version,
                "read_at": datetime.fromtimestamp(at, UTC),
            }
            for (key_id, service, environment), (version, at) in noted.items()
        ]
        # A later read wins; an earlier one written late (another process) changes nothing.
        upsert(
            session,
            ReadReceiptRow,
            rows,
            key=["key_id", "service", "environment"],
            update=["version", "read_at"],
            where=lambda proposed: ReadReceiptRow.read_at < proposed.read_at,
        )


@dataclass(frozen=True, slots=True)
class Client:
    key_id: str
    name: str
    prefix: str
    permission: str
    version: int | None  # None: has not read this config yet
    read_at: datetime | None


def clients(
    session: Session, service: str, environment: str, receipts: ReadReceipts
) -> list[Client]:
    """The live API keys that may read the config, with what each last read (newest first)."""
    query = (
        select(ApiKeyRow, ReadReceiptRow.version, ReadReceiptRow.read_at)
        .outerjoin(
            ReadReceiptRow,
            and_(
                ReadReceiptRow.key_id == ApiKeyRow.id,
                ReadReceiptRow.service == service,
                ReadReceiptRow.environment == environment,
            ),
        )
        .where(ApiKeyRow.service == service)
        .where(or_(ApiKeyRow.environment.is_(None), ApiKeyRow.environment == environment))
        .where(ApiKeyRow.revoked_at.is_(None))
    )
    unwritten = receipts.pending()
    found = []
    for key, version, read_at in session.execute(query):
        late = unwritten.get((key.id, service, environment))
        if late is not None and (read_at is None or late[1] > read_at.timestamp()):
            version, read_at = late[0], datetime.fromtimestamp(late[1], UTC)
        found.append(Client(key.id, key.name, key.prefix, key.permission, version, read_at))
    never = datetime.min.replace(tzinfo=UTC)
    return sorted(found, key=lambda c: (c.read_at or never, c.name), reverse=True)
