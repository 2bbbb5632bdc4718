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


class ClientOut(Out):
    key_id: str
    name: str
    prefix: str
    permission: str
    version: int | None = Field(description="the version it last fetched; null: never")
    read_at: str | None
    behind: bool = Field(description="it has not fetched the current version")


class ClientsOut(Out):
    service: str
    environment: str
    version: int
    clients: list[ClientOut]


class LegacyListItem(Out):
    id: str = Field(description="service/environment (the original's was a row number)")
    name: str
    environment: str
    version: int
    config: dict[str, Any]
    updated_at: str
    user_id: str | None = Field(description="the service's owner")


class LegacyList(Out):
    configs: list[LegacyListItem]


class LegacyVersion(Out):
    id: int = Field(description="the version number: what /config/diff and /config/rollback take")
    service_name: str
    version: int
    config: dict[str, Any] | None = Field(description="secrets masked; null: deleted")
    created_at: str
    user_id: str | None
    action: str
    reason: str | None
    rollback_of: int | None


class LegacyVersions(Out):
    service_name: str
    environment: str
    versions: list[LegacyVersion]


class LegacyDiff(Out):
    service: str
    environment: str
    version1: int
    version2: int
    diff: dict[str, Any] = Field(description="DeepDiff's report, as the original answered")
    changes: list[dict[str, Any]]
    stats: dict[str, int]


class LegacyRolledBack(Out):
    id: str
    name: str
    environment: str
    version: int
    config: dict[str, Any] = Field(description="secrets masked: a rollback is not a read")
    updated_at: str
    user_id: str | None
    rollback_of: int
    changed: bool


class LegacyDeleted(Out):
    detail: str
    service: str
    environment: str
    version: int


class LegacyHealth(Out):
    api_status: str
    db_status: str


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
    revealed: list[list[str | int]] | None = Field(
        None, description="with reveal=true: the secret values shown in plain text"
    )


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


class SecretsDeclare(Body):
    paths: list[str] = Field(
        max_length=500,
        description="key paths whose values are secret (a.b.c; a dot inside a key as \\.)",
    )


class SecretsOut(Out):
    service: str
    paths: list[str] = Field(description="the key paths the owner declared secret")
    patterns: list[str] = Field(description="key-name patterns secret everywhere (a setting)")
    plaintext_versions: dict[str, int] = Field(
        description="per declared path: how many earlier versions hold it in plain text"
    )


class SecretsDestroy(Body):
    up_to_version: int = Field(ge=1, description="destroy the secret values of versions 1..N")
    reason: str | None = REASON


class SecretsDestroyed(Out):
    service: str
    environment: str
    version: int = Field(description="the version that records the destruction")
    changed: bool = Field(description="false when there was nothing sealed to destroy")
    destroyed_keys: list[str]
    unreadable_through_version: int = Field(
        description="secret values of versions up to this one can no longer be read"
    )
