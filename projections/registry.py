"""Every projection, listed once: what the write path, the worker, the CLI and Alembic iterate.

Inline projections are applied in the append's own transaction (read-your-writes) and have no
checkpoint: they are never behind. Asynchronous ones are applied by the worker, from their
checkpoint on (projections.base). Importing this module imports every projection's tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from configsync.events import Alongside, NewEvent, StoredEvent, last_position
from projections import audit, current, merkle, snapshots
from projections.base import Projection, Status, catch_up, checkpoint, rebuild


@dataclass(frozen=True, slots=True)
class Inline:
    """A projection applied with every append, rebuilt by replaying the log in one transaction."""

    name: str
    handles: frozenset[str]
    # (session, [(event, the document after it as canonical JSON)]), under the append lock.
    apply_all: Callable[[Session, Sequence[tuple[StoredEvent, str]]], None]
    # apply_all's writes for events about to be appended, as a statement to run beside the
    # append (PostgreSQL): [(event, its document as canonical JSON)] in the batch's order.
    alongside: Callable[[Sequence[tuple[NewEvent, str]]], Alongside | None]
    rebuild: Callable[[Session], int]
    # The last position it reflects; None when that cannot be told (it is never behind).
    position: Callable[[Session], int] | None = None


INLINE: tuple[Inline, ...] = (
    Inline(
        current.NAME,
        current.HANDLES,
        current.apply_all,
        current.alongside,
        current.rebuild,
        current.position,
    ),
    Inline(
        snapshots.NAME,
        snapshots.HANDLES,
        snapshots.apply_all,
        snapshots.alongside,
        snapshots.rebuild,
    ),
)
ASYNCHRONOUS: tuple[Projection, ...] = (audit.AuditProjection(), merkle.MerkleProjection())
NAMES: tuple[str, ...] = tuple(p.name for p in INLINE) + tuple(p.name for p in ASYNCHRONOUS)


def apply_inline(session: Session, appended: Sequence[tuple[StoredEvent, str]]) -> None:
    """Apply every inline projection to events just appended, in the append's transaction."""
    for projection in INLINE:
        projection.apply_all(session, appended)


def inline_alongside(appending: Sequence[tuple[NewEvent, str]]) -> list[Alongside]:
    """Every inline projection's writes for events about to be appended, as statements to run in
    the append's own round trip (PostgreSQL): what apply_inline does after it elsewhere."""
    return [s for p in INLINE if (s := p.alongside(appending)) is not None]


def catch_up_all(
    factory: sessionmaker[Session],
    *,
    batch_size: int = 1000,
    on_batch: Callable[[Sequence[StoredEvent]], None] | None = None,
) -> dict[str, int]:
    """Bring every asynchronous projection up to the end of the log; how many each applied."""
    return {
        p.name: catch_up(factory, p, batch_size=batch_size, on_batch=on_batch) for p in ASYNCHRONOUS
    }


def rebuild_one(factory: sessionmaker[Session], name: str) -> int:
    """Replay every event into the projection called `name`; returns how many were replayed."""
    for inline in INLINE:
        if inline.name == name:
            with factory() as session:
                count = inline.rebuild(session)
                session.commit()
            return count
    for projection in ASYNCHRONOUS:
        if projection.name == name:
            return rebuild(factory, projection)
    raise KeyError(f"no projection is called {name!r}; there are {', '.join(NAMES)}")


def status_all(session: Session) -> list[Status]:
    """Each projection's position and lag against the last event (those that have one)."""
    last = last_position(session)
    rows = [Status(p.name, p.position(session), last) for p in INLINE if p.position is not None]
    rows += [Status(p.name, checkpoint(session, p.name), last) for p in ASYNCHRONOUS]
    return rows
