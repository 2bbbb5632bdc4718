"""Who did something: recorded in every event's metadata."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Actor:
    kind: str  # "user" | "api_key" | "legacy_key" | "system"
    id: str
    name: str

    def as_json(self) -> dict[str, str]:
        return {"kind": self.kind, "id": self.id, "name": self.name}


SYSTEM = Actor(kind="system", id="system", name="configsync")
