"""Reads of the audit projection: filters and keyset pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from configsync.domain.documents import touches
from configsync.errors import InvalidInput
from configsync.events import verify_chain
from configsync.events.canonical import loads
from projections.audit import AuditRow, first_mismatch


def filtered(
    service: str | None,
    environment: str | None,
    actor: str | None,
    action: str | None,
    since: datetime | None,
    until: datetime | None,
) -> Select[Any]:
    """Audit rows matching every filter given, in position order."""
    query = select(AuditRow)
    for column, value in (
        (AuditRow.service, service),
        (AuditRow.environment, environment),
        (AuditRow.action, action),
    ):
        if value is not None:
            query = query.where(column == value)
    if actor is not None:
        query = query.where((AuditRow.actor_name == actor.lower()) | (AuditRow.actor_id == actor))
    for bound in (since, until):
        if bound is not None and bound.tzinfo is None:
            raise InvalidInput("since and until need a time zone, such as 2026-01-01T00:00:00Z")
    if since is not None:
        query = query.where(AuditRow.recorded_at >= since)
    if until is not None:
        query = query.where(AuditRow.recorded_at <= until)
    return query.order_by(AuditRow.position)


def page(
    session: Session, query: Select[Any], *, after: int | None, limit: int
) -> tuple[list[AuditRow], int | None]:
    """Up to `limit` rows after position `after`, and the cursor of the next page (or None)."""
    if after is not None:
        query = query.where(AuditRow.position > after)
    rows = list(session.scalars(query.limit(limit)))
    return rows, (rows[-1].position if len(rows) == limit else None)


def audit_end(session: Session) -> int:
    """The last position the audit projection holds."""
    return int(session.scalar(select(func.max(AuditRow.position))) or 0)


def count(session: Session, query: Select[Any]) -> int:
    return int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)


def page_touching(
    session: Session, query: Select[Any], key: list[str], *, after: int | None, limit: int
) -> tuple[list[AuditRow], int | None]:
    """Like `page`, keeping only rows whose changes touch `key` (or inside it)."""
    kept: list[AuditRow] = []
    while len(kept) < limit:
        rows, _ = page(session, query, after=after, limit=500)
        if not rows:
            return kept, None
        for row in rows:
            if touches(loads(row.changes), key):
                kept.append(row)
                if len(kept) == limit:
                    return kept, row.position
        after = rows[-1].position
    return kept, None


@dataclass(frozen=True, slots=True)
class ChainStatus:
    ok: bool
    checked: int
    first_bad_position: int | None


def verify(session: Session) -> ChainStatus:
    """Walk the hash chain of every event and compare every audit row's hash with its event's;
    an audit row whose hash is not its event's counts as a bad position too."""
    report = verify_chain(session)
    bad = [p for p in (report.first_bad_position, first_mismatch(session)) if p is not None]
    return ChainStatus(not bad, report.checked, min(bad, default=None))
