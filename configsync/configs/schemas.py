"""Request and response bodies of the config endpoints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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


class ConfigOut(BaseModel):
    service: str
    environment: str
    version: int
    data: dict[str, Any]
    updated_at: str
    updated_by: dict[str, Any]


class ConfigWritten(ConfigOut):
    changed: bool


class ConfigDeleted(BaseModel):
    service: str
    environment: str
    version: int
    deleted: bool = True


class ConfigListItem(BaseModel):
    service: str
    environment: str
    version: int
    updated_at: str


class ConfigList(BaseModel):
    items: list[ConfigListItem]


class LegacyConfig(BaseModel):
    service: str
    environment: str
    version: int
    config: dict[str, Any]


class LegacyUpdated(BaseModel):
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


class HistoryItem(BaseModel):
    version: int
    recorded_at: str
    actor: dict[str, Any] | None
    action: str
    summary: str
    reason: str | None
    rollback_of: int | None
    promoted_from: dict[str, Any] | None
    position: int


class HistoryOut(BaseModel):
    items: list[HistoryItem]
    next_before_version: int | None


class Change(BaseModel):
    op: str
    path: list[str]
    old: Any = None
    new: Any = None


class DiffOut(BaseModel):
    changes: list[Change]
    stats: dict[str, int]
