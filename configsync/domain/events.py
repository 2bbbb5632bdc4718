"""The config domain's event: `ConfigChanged`, its typed payload, and how streams are named.

The store (configsync.events) keeps any event type in any stream; this module is where the
config domain says what its events are. A config's stream is `"{service}/{environment}"`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from configsync.domain.documents import Change

CONFIG_CHANGED = "ConfigChanged"
SECRETS_REVEALED = "SecretsRevealed"

CREATED, UPDATED, DELETED = "created", "updated", "deleted"
ROLLED_BACK, PROMOTED = "rolled_back", "promoted"
# Secrets: the current values sealed afresh and older data keys destroyed; a plaintext reveal.
DESTROYED, REVEALED = "destroyed", "revealed"
ACTIONS = (CREATED, UPDATED, DELETED, ROLLED_BACK, PROMOTED, DESTROYED, REVEALED)


def stream_name(service: str, environment: str) -> str:
    return f"{service}/{environment}"


def split_stream(stream: str) -> tuple[str, str]:
    service, _, environment = stream.partition("/")
    return service, environment


@dataclass(frozen=True, slots=True)
class ConfigChanged:
    """The payload (`data`) of a ConfigChanged event.

    `action` is absent from the oldest events; `from_data` derives it as they were read then.
    """

    action: str
    changes: list[Change]
    reason: str | None = None
    rollback_of: int | None = None
    deleted: bool = False
    promoted_from: dict[str, Any] | None = None
    # A destroy: `{"up_to_version": N, "keys": [data key ids destroyed]}`.
    secrets_destroyed: dict[str, Any] | None = None

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "action": self.action,
            "changes": self.changes,
            "reason": self.reason,
            "rollback_of": self.rollback_of,
            "deleted": self.deleted,
        }
        if self.promoted_from is not None:
            data["promoted_from"] = self.promoted_from
        if self.secrets_destroyed is not None:
            data["secrets_destroyed"] = self.secrets_destroyed
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any], version: int) -> ConfigChanged:
        return cls(
            action=action_of(data, version),
            changes=list(data["changes"]),
            reason=data.get("reason"),
            rollback_of=data.get("rollback_of"),
            deleted=bool(data.get("deleted")),
            promoted_from=data.get("promoted_from"),
            secrets_destroyed=data.get("secrets_destroyed"),
        )


def reveals_stream(service: str, environment: str) -> str:
    """Where the reveals of a config's secrets are recorded: beside its stream, not in it (its
    versions count the config's changes only)."""
    return f"{stream_name(service, environment)}/reveals"


@dataclass(frozen=True, slots=True)
class SecretsRevealed:
    """Somebody was shown secret values in plain text: who is the event's actor."""

    service: str
    environment: str
    from_version: int
    to_version: int
    paths: list[list[str | int]]
    reason: str | None = None

    def to_data(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "environment": self.environment,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "paths": self.paths,
            "reason": self.reason,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> SecretsRevealed:
        return cls(
            service=data["service"],
            environment=data["environment"],
            from_version=data["from_version"],
            to_version=data["to_version"],
            paths=list(data["paths"]),
            reason=data.get("reason"),
        )

    def summary(self) -> str:
        names = ", ".join(".".join(str(p) for p in path) for path in self.paths[:10])
        more = len(self.paths) - 10
        return (
            f"revealed {len(self.paths)} secret value(s) of versions {self.from_version} and "
            f"{self.to_version}: {names}" + (f" and {more} more" if more > 0 else "")
        )


def action_of(data: Mapping[str, Any], version: int) -> str:
    """The action a ConfigChanged payload records (derived for events written before it did)."""
    recorded = data.get("action")
    if isinstance(recorded, str):
        return recorded
    if data.get("deleted"):
        return DELETED
    if data.get("rollback_of"):
        return ROLLED_BACK
    return CREATED if version == 1 else UPDATED


def summarize(changes: Iterable[Mapping[str, Any]], *, max_names: int = 10) -> str:
    """One line for humans: `+2 ~1 -0: API_URL, TIMEOUT, RETRIES`."""
    counts = {"add": 0, "replace": 0, "remove": 0}
    names: list[str] = []
    for change in changes:
        counts[change["op"]] += 1
        names.append(".".join(change["path"]) or "(whole document)")
    line = f"+{counts['add']} ~{counts['replace']} -{counts['remove']}"
    if names:
        shown = ", ".join(names[:max_names])
        more = len(names) - max_names
        line += f": {shown}" + (f" and {more} more" if more > 0 else "")
    return line
