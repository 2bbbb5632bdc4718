"""The audit trail over HTTP: the log, its export, the hash chain, the raw event feed."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import Select
from sqlalchemy.orm import Session

from configsync.audit.queries import audit_end, count, filtered, page, page_touching, verify
from configsync.audit.schemas import AuditPage, ChainVerified, EventsPage, ProjectionsOut
from configsync.auth.deps import AdminDep, AuditorOrAdminDep
from configsync.db import read_only
from configsync.deps import SessionDep, session_factory
from configsync.domain.documents import parse_key
from configsync.domain.events import ACTIONS
from configsync.domain.secrets import mask
from configsync.events import StoredEvent, format_instant, last_position, read_after
from configsync.http import alternatives, dumps, errors, json_response
from configsync.hygiene import Instant
from projections.audit import AuditRow, as_item
from projections.registry import status_all

router = APIRouter(tags=["audit"], responses=errors(401, 403, 413, 422, 503))

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


@router.get(
    "/v1/audit",
    response_model=AuditPage,
    responses={
        200: {
            "content": alternatives(
                {
                    "application/x-ndjson": "format=jsonl: one audit item per line",
                    "text/csv": "format=csv: a header row, then one row per item",
                }
            ),
            "headers": {
                "X-Export-Rows": {
                    "description": "with format=jsonl|csv: how many rows a complete export has",
                    "schema": {"type": "integer"},
                }
            },
        }
    },
)
def audit_log(
    request: Request,
    session: SessionDep,
    _caller: AuditorOrAdminDep,
    service: str | None = None,
    environment: str | None = None,
    actor: Annotated[str | None, Query(description="email or id")] = None,
    action: Annotated[str | None, Query(pattern=f"^({'|'.join(ACTIONS)})$")] = None,
    since: Instant | None = None,
    until: Instant | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[
        int | None, Query(ge=0, description="next_cursor of the previous page")
    ] = None,
    format: Annotated[str | None, Query(pattern="^(jsonl|csv)$")] = None,
    key: Annotated[
        str | None, Query(description="only changes to this key (a.b.c) or inside it")
    ] = None,
) -> Response:
    """The audit log in position order, filtered and paged; `format=jsonl|csv` exports it all."""
    query = filtered(service, environment, actor, action, since, until)
    if format is not None:
        return export(request, session, query, format)
    if key is not None:
        path = parse_key(key)
        rows, next_cursor = page_touching(session, query, path, after=cursor, limit=limit)
    else:
        rows, next_cursor = page(session, query, after=cursor, limit=limit)
    return json_response({"items": [as_item(r) for r in rows], "next_cursor": next_cursor})


EXPORT_PAGE = 1000


def export(request: Request, session: Session, query: Select[Any], fmt: str) -> Response:
    """Stream every matching row, a page at a time: never the whole export in memory.

    Everything that can fail before the first byte is done before the status line: the
    parameters are checked, the rows are bounded by the log's end as it is now, counted (the
    `X-Export-Rows` header, so a reader can tell a complete export) and the first page is
    read. Later pages are read each in a short transaction of its own, so an export holds no
    lock between them (on SQLite, none that writers wait for). If a page fails mid-stream the
    connection is aborted: the export is cut off, never ended cleanly as if complete.
    """
    bounded = query.where(AuditRow.position <= audit_end(session))
    rows = count(session, bounded)
    first, _ = page(session, bounded, after=None, limit=EXPORT_PAGE)
    readers = read_only(session_factory(request))

    def pages() -> Iterator[list[AuditRow]]:
        batch = first
        while batch:
            yield batch
            if len(batch) < EXPORT_PAGE:
                return
            with readers() as reader:
                batch, _ = page(reader, bounded, after=batch[-1].position, limit=EXPORT_PAGE)

    headers = {"X-Export-Rows": str(rows)}
    if fmt == "jsonl":
        body = (b"".join(dumps(as_item(r)) + b"\n" for r in batch) for batch in pages())
        return StreamingResponse(body, media_type="application/x-ndjson", headers=headers)
    headers["Content-Disposition"] = 'attachment; filename="configsync-audit.csv"'
    return StreamingResponse(_csv(pages()), media_type="text/csv; charset=utf-8", headers=headers)


def _csv(pages: Iterator[list[AuditRow]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for rows in pages:
        for row in rows:
            writer.writerow(_csv_row(row))
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue().encode()


def _csv_row(row: AuditRow) -> dict[str, Any]:
    item = as_item(row)
    actor = item.pop("actor")
    item.update(actor_kind=actor["kind"], actor_id=actor["id"], actor_name=actor["name"])
    item["changes"] = json.dumps(item["changes"], ensure_ascii=False, separators=(",", ":"))
    return item


@router.get("/v1/audit/verify", response_model=ChainVerified)
def audit_verify(session: SessionDep, _caller: AuditorOrAdminDep) -> Response:
    """Walk the hash chain of every event and compare every audit row's hash with its event's:
    ok, how many events were checked, the first bad position."""
    status = verify(session)
    return json_response(
        {
            "ok": status.ok,
            "checked": status.checked,
            "first_bad_position": status.first_bad_position,
        }
    )


@router.get(
    "/v1/events",
    response_model=EventsPage,
    responses={
        200: {
            "content": alternatives(
                {"application/x-ndjson": "format=jsonl: every event after `after`, one a line"}
            )
        }
    },
)
def events_feed(
    request: Request,
    session: SessionDep,
    _caller: AuditorOrAdminDep,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    format: Annotated[str | None, Query(pattern="^jsonl$")] = None,
) -> Response:
    """The raw event log in global order, for external consumers: page on with `after`;
    `format=jsonl` exports every event after `after` (what `configsync log verify` reads)."""
    if format is not None:
        return _export_events(request, session, after)
    events = read_after(session, after, limit)
    next_after = events[-1].position if events else after
    items = [_event(e, data=mask(e.data)) for e in events]
    return json_response({"items": items, "next_after": next_after})


def _event(e: StoredEvent, *, data: Any = None) -> dict[str, Any]:
    """An event as the feed shows it. The page masks secret values; the JSON-lines export keeps
    them sealed (ciphertext: no plaintext ever), so that every hash can be checked from it."""
    return {
        "position": e.position,
        "event_id": e.event_id,
        "stream": e.stream,
        "version": e.version,
        "type": e.type,
        "data": e.data if data is None else data,
        "metadata": e.metadata,
        "recorded_at": format_instant(e.recorded_at),
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    }


def _export_events(request: Request, session: Session, after: int) -> Response:
    """Every event after `after` up to the log's end now, counted in X-Export-Rows; pages are
    read in short read-only transactions, and a failure mid-stream aborts the connection."""
    end = last_position(session)
    first = read_after(session, after, EXPORT_PAGE)
    readers = read_only(session_factory(request))

    def pages() -> Iterator[list[StoredEvent]]:
        batch = [e for e in first if e.position <= end]
        while batch:
            yield batch
            if batch[-1].position >= end:
                return
            with readers() as reader:
                batch = [e for e in read_after(reader, batch[-1].position, EXPORT_PAGE)]
                batch = [e for e in batch if e.position <= end]

    body = (b"".join(dumps(_event(e)) + b"\n" for e in batch) for batch in pages())
    headers = {"X-Export-Rows": str(max(0, end - after))}
    return StreamingResponse(body, media_type="application/x-ndjson", headers=headers)


@router.get("/v1/projections", response_model=ProjectionsOut)
def projections_status(session: SessionDep, _admin: AdminDep) -> Response:
    """Each projection's position and how many events it is behind."""
    rows = status_all(session)
    last = rows[0].last_position
    items = [{"name": r.name, "position": r.position, "lag": r.lag} for r in rows]
    return json_response({"last_position": last, "projections": items})
