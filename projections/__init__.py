"""Read models built from events: `current` (inline), `snapshots` (inline), `audit` (worker)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from projections.base import Status


def status_all(session: Session) -> list[Status]:
    """Every projection's position and lag against the last event, `current` first."""
    # Imported here: projections.audit imports the config domain, which imports
    # projections.current, so importing it at the top of this package would be circular.
    from configsync.events import last_position
    from projections import audit, current
    from projections.base import Status, checkpoint

    last = last_position(session)
    return [
        Status(current.NAME, current.position(session), last),
        Status(audit.NAME, checkpoint(session, audit.NAME), last),
    ]
