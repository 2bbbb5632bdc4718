"""The audit trail over HTTP: the log, its export, the hash chain, the raw event feed."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import Select, select

from configsync.auth.permissions import ADMIN, AUDITOR, Caller
from configsync.configs.rendering import dumps, json_response
from configsync.deps import CallerDep, SessionDep
from configsync.errors import Forbidden, InvalidInput
from configsync.events import format_instant, read_after, verify_chain
from projections import status_all
from projections.audit import AuditRow, as_item

router = APIRouter(tags=["audit"])

CSV_FIELDS = [
    "position",
    "event_id",
    "recorded_at",
    "actor_kind",
    "actor_id",
    "actor_name",
    "service",
    "environment",
    "version",
    "action",
    "summary",
    "reason",
    "changes",
    "hash",
]


def _require(caller: Caller, *roles: str) -> None:
    if not (caller.is_person and caller.role in roles):
        raise Forbidden(f"only {' and '.join(r + 's' for r in roles)} may read this")


def _filtered(
    service: str | None,
    environment: str | None,
    actor: str | None,
    action: str | None,
    since: datetime | None,
    until: datetime | None,
) -> Select[Any]:
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


@router.get("/v1/audit")
def audit_log(
    request: Request,
    session: SessionDep,
    caller: CallerDep,
    service: str | None = None,
    environment: str | None = None,
    actor: Annotated[str | None, Query(description="email or id")] = None,
    action: Annotated[
        str | None, Query(pattern="^(created|updated|deleted|rolled_back|promoted)$")
    ] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[
        int | None, Query(ge=0, description="next_cursor of the previous page")
    ] = None,
    format: Annotated[str | None, Query(pattern="^(jsonl|csv)$")] = None,
) -> Response:
    """The audit log in position order, filtered and paged; `format=jsonl|csv` exports it all."""
    _require(caller, ADMIN, AUDITOR)
    query = _filtered(service, environment, actor, action, since, until)
    if format is not None:
        return _export(request, query, format)
    if cursor is not None:
        query = query.where(AuditRow.position > cursor)
    rows = list(session.scalars(query.limit(limit)))
    next_cursor = rows[-1].position if len(rows) == limit else None
    return json_response({"items": [as_item(r) for r in rows], "next_cursor": next_cursor})


def _export(request: Request, query: Select[Any], fmt: str) -> StreamingResponse:
    """Stream every matching row, a page at a time: never the whole export in memory."""
    factory = request.app.state.session_factory

    def pages() -> Iterator[list[AuditRow]]:
        after = -1
        with factory() as session:
            while True:
                rows = list(session.scalars(query.where(AuditRow.position > after).limit(1000)))
                if not rows:
                    return
                yield rows
                after = rows[-1].position

    def jsonl() -> Iterator[bytes]:
        for rows in pages():
            yield b"".join(dumps(as_item(r)) + b"\n" for r in rows)

    def csv_lines() -> Iterator[bytes]:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for rows in pages():
            for row in rows:
                item = _csv_row(row)
                writer.writerow(item)
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue().encode()

    if fmt == "jsonl":
        return StreamingResponse(jsonl(), media_type="application/x-ndjson")
    return StreamingResponse(
        csv_lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="configsync-audit.csv"'},
    )


def _csv_row(row: AuditRow) -> dict[str, Any]:
    item = as_item(row)
    actor = item.pop("actor")
    item.update(actor_kind=actor["kind"], actor_id=actor["id"], actor_name=actor["name"])
    item["changes"] = json.dumps(item["changes"], ensure_ascii=False, separators=(",", ":"))
    return item


@router.get("/v1/audit/verify")
def audit_verify(session: SessionDep, caller: CallerDep) -> Response:
    """Walk the hash chain of every event: ok, how many were checked, the first bad position."""
    _require(caller, ADMIN, AUDITOR)
    report = verify_chain(session)
    return json_response(
        {
            "ok": report.ok,
            "checked": report.checked,
            "first_bad_position": report.first_bad_position,
        }
    )


@router.get("/v1/events")
def events_feed(
    session: SessionDep,
    caller: CallerDep,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """The raw event log in global order, for external consumers: page on with `after`."""
    _require(caller, ADMIN, AUDITOR)
    events = read_after(session, after, limit)
    items = [
        {
            "position": e.position,
            "event_id": e.event_id,
            "stream": e.stream,
            "version": e.version,
            "type": e.type,
            "data": e.data,
            "metadata": e.metadata,
            "recorded_at": format_instant(e.recorded_at),
            "prev_hash": e.prev_hash,
            "hash": e.hash,
        }
        for e in events
    ]
    next_after = events[-1].position if events else after
    return json_response({"items": items, "next_after": next_after})


@router.get("/v1/projections")
def projections_status(session: SessionDep, caller: CallerDep) -> Response:
    """Each projection's position and how many events it is behind."""
    _require(caller, ADMIN)
    rows = status_all(session)
    last = rows[0].last_position
    items = [{"name": r.name, "position": r.position, "lag": r.lag} for r in rows]
    return json_response({"last_position": last, "projections": items})
