"""Backup and restore: the source of truth in one file, taken consistently while the server runs.

A backup holds the tables nothing else can rebuild: the events, the people, the services and
their keys, the secrets' wrapped data keys and the signed checkpoints, read in one transaction
(PostgreSQL: REPEATABLE READ; SQLite: one read transaction over the WAL), so it is one moment of
the store even while writes go on. Projections are not in it: a restore rebuilds them from the
events. The format is JSON lines (a header, then one row a line), the same from either database,
so a backup of the embedded SQLite file restores into PostgreSQL.

A restore goes into an empty, migrated database, in one transaction: rows in, then the hash chain
walked, then every projection rebuilt. A file whose chain does not verify is refused and nothing
of it is kept. Secret values stay sealed; the master key that wraps their data keys is not in
the file (keep it apart: see the README).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Boolean, Table, func, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from configsync.audit.log import CheckpointRow
from configsync.auth.models import ApiKeyRow, ServiceRow, UserRow
from configsync.db import UTCDateTime, read_only, unit_of_work
from configsync.errors import InvalidInput
from configsync.events import last_position, verify_chain
from configsync.events.models import EventRow
from configsync.secrets.models import SecretKeyRow
from projections.registry import NAMES, rebuild_one

FORMAT = "configsync-backup/1"
# In the order a restore inserts them (a row's foreign keys point at rows already in).
TABLES: tuple[Any, ...] = (UserRow, ServiceRow, ApiKeyRow, SecretKeyRow, EventRow, CheckpointRow)


def backup(sessions: sessionmaker[Session], path: Path) -> int:
    """Write a consistent backup to `path` (atomically, 0600); returns the events it holds."""
    partial = path.with_name(path.name + ".partial")
    with read_only(sessions)() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        events = last_position(session)
        with open(partial, "w", encoding="utf-8", opener=_private) as out:
            _line(out, {"format": FORMAT, "last_position": events})
            for model in TABLES:
                table = _table(model)
                for row in session.execute(select(table).order_by(*table.primary_key.columns)):
                    _line(out, {"table": table.name, "row": _encoded(row._mapping)})
            out.flush()
        session.rollback()
    partial.replace(path)
    return events


def restore(sessions: sessionmaker[Session], path: Path) -> int:
    """Restore `path` into this empty database; returns the events restored."""
    lines = _lines(path)
    header = next(lines, None)
    if not header or header.get("format") != FORMAT:
        raise InvalidInput(f"{path} is not a ConfigSync backup ({FORMAT})")
    by_name = {_table(model).name: _table(model) for model in TABLES}
    with unit_of_work(sessions) as session:
        for model in (EventRow, UserRow):
            if session.scalar(select(func.count()).select_from(_table(model))):
                raise InvalidInput("restore needs an empty database: this one has data")
        batch: list[dict[str, Any]] = []
        current: Table | None = None
        for item in lines:
            table = by_name.get(item.get("table", ""))
            if table is None:
                raise InvalidInput(f"{path}: a line names an unknown table {item.get('table')!r}")
            if current is not None and table is not current and batch:
                session.execute(insert(current), batch)
                batch = []
            current = table
            batch.append(_decoded(table, item["row"]))
            if len(batch) >= 1000:
                session.execute(insert(current), batch)
                batch = []
        if current is not None and batch:
            session.execute(insert(current), batch)
        report = verify_chain(session)
        restored = last_position(session)
        if not report.ok:
            raise InvalidInput(
                f"{path}: the hash chain does not verify (first bad position "
                f"{report.first_bad_position}); nothing was restored"
            )
        if restored != header.get("last_position"):
            raise InvalidInput(
                f"{path}: it says it holds {header.get('last_position')} events, but holds "
                f"{restored}; nothing was restored"
            )
    for name in NAMES:
        rebuild_one(sessions, name)
    return restored


def _table(model: Any) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


def _encoded(row: Any) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def _decoded(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for column in table.columns:
        value = row.get(column.name)
        if value is not None and isinstance(column.type, UTCDateTime):
            value = datetime.fromisoformat(value)
        elif value is not None and isinstance(column.type, Boolean):
            value = bool(value)
        values[column.key] = value
    return values


def _line(out: IO[str], value: dict[str, Any]) -> None:
    out.write(json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n")


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    yield json.loads(line)
                except ValueError:
                    raise InvalidInput(f"{path}: line {number} is not JSON") from None
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file") from None


def _private(path: str, flags: int) -> int:
    import os

    return os.open(path, flags, 0o600)
