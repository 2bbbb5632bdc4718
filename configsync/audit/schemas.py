"""Response bodies of the audit endpoints."""

from __future__ import annotations

from typing import Any

from configsync.http import Out


class ActorOut(Out):
    kind: str
    id: str
    name: str


class AuditItem(Out):
    position: int
    event_id: str
    recorded_at: str
    actor: ActorOut
    service: str
    environment: str
    version: int
    action: str
    summary: str
    reason: str | None
    changes: list[dict[str, Any]]
    hash: str


class AuditPage(Out):
    items: list[AuditItem]
    next_cursor: int | None


class ChainVerified(Out):
    ok: bool
    checked: int
    first_bad_position: int | None


class EventItem(Out):
    position: int
    event_id: str
    stream: str
    version: int
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: str
    prev_hash: str
    hash: str


class EventsPage(Out):
    items: list[EventItem]
    next_after: int


class ProjectionOut(Out):
    name: str
    position: int
    lag: int


class ProjectionsOut(Out):
    last_position: int
    projections: list[ProjectionOut]


class CheckpointSigned(Out):
    tree_size: int
    root_hash: str
    note: str


class InclusionProof(Out):
    leaf_index: int
    tree_size: int
    leaf_hash: str
    inclusion_path: list[str]
    root_hash: str


class ConsistencyProof(Out):
    tree_size_1: int
    tree_size_2: int
    consistency_path: list[str]
