"""Request and response bodies of the config endpoints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from configsync.http import Out

REASON = Field(None, max_length=1000, description="why: kept with the event, shown in history")


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConfigWrite(Body):
    data: dict[str, Any] = Field(
        description="the whole document (PUT) or a JSON Merge Patch (PATCH)"
    )
    reason: str | None = REASON
    expected_version: int | None = Field(
        None, ge=0, description="the version the config must be at; 0: must not exist"
    )


class ConfigDelete(Body):
    reason: str | None = REASON
    expected_version: int | None = Field(None, ge=1)


class LegacyUpdate(Body):
    """POST /config/update of the original ConfigSync."""

    name: str
    config: dict[str, Any]
    environment: str = "default"
    reason: str | None = REASON


class ConfigOut(Out):
    service: str
    environment: str
    version: int
    data: dict[str, Any]
    updated_at: str
    updated_by: dict[str, Any]


class ConfigWritten(ConfigOut):
    changed: bool


class ConfigDeleted(Out):
    service: str
    environment: str
    version: int
    deleted: bool = True


class ConfigListItem(Out):
    service: str
    environment: str
    version: int
    updated_at: str


class ConfigList(Out):
    items: list[ConfigListItem]


class LegacyConfig(Out):
    service: str
    environment: str
    version: int
    config: dict[str, Any]


class LegacyUpdated(Out):
    status: str
    message: str
    service: str
    environment: str
    version: int


class RollbackBody(Body):
    to_version: int = Field(ge=1, description="the version whose document becomes current again")
    reason: str | None = REASON
    expected_version: int | None = Field(None, ge=0)


class PromoteBody(Body):
    to_environment: str
    keys: list[str] | None = Field(
        None, min_length=1, max_length=2000, description="only these keys (default: all)"
    )
    reason: str | None = REASON
    expected_version: int | None = Field(
        None, ge=0, description="the version the target environment must be at"
    )


class HistoryItem(Out):
    version: int
    recorded_at: str
    actor: dict[str, Any] | None
    action: str
    summary: str
    reason: str | None
    rollback_of: int | None
    promoted_from: dict[str, Any] | None
    position: int


class HistoryOut(Out):
    items: list[HistoryItem]
    next_before_version: int | None


class Change(Out):
    op: str
    path: list[str]
    old: Any = None
    new: Any = None


class Differences(Out):
    changes: list[Change]
    stats: dict[str, int]


class DiffOut(Differences):
    from_: int = Field(alias="from")
    to: int


class CompareOut(Differences):
    service: str
    from_env: str
    to_env: str
    from_version: int
    to_version: int


class RolledBack(ConfigWritten):
    rollback_of: int
    message: str | None = Field(None, description="set when nothing was appended")


class BlameItem(Out):
    path: list[str]
    version: int
    recorded_at: str
    actor: dict[str, Any] | None
    action: str
    reason: str | None


class BlameOut(Out):
    service: str
    environment: str
    keys: list[BlameItem]
