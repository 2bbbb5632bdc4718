"""When each API key was last used: noted in memory on every request, written in the background.

A write per authenticated read would cost the hot path a database round trip; instead each
process keeps the latest time per key and a thread writes them every few seconds (and at
shutdown). `last_used_at` may be a few seconds late; it never moves backwards.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy import or_, update
from sqlalchemy.orm import Session, sessionmaker

from configsync.auth.models import ApiKeyRow
from configsync.background import Noted


class KeyUsage(Noted[str, float]):
    what = "API keys' last use"

    def __init__(self, sessions: sessionmaker[Session], interval: float) -> None:
        super().__init__(sessions, interval, "configsync-key-usage")

    def seen(self, key_id: str) -> None:
        self.note(key_id, time.time())

    def write(self, session: Session, noted: dict[str, float]) -> None:
        for key_id, at in noted.items():
            moment = datetime.fromtimestamp(at, UTC)
            session.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id)
                .where(or_(ApiKeyRow.last_used_at.is_(None), ApiKeyRow.last_used_at < moment))
                .values(last_used_at=moment)
            )
