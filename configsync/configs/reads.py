"""The one decision of how to answer GET /v1/configs/{service}/{environment}.

The cached fast path (configsync.configs.fastpath) and the endpoint both call `decide`, so a
read is answered the same way whether the caches or the database supplied the config. `decide`
also says when the answer is not due yet: a long poll (`wait` with `If-None-Match`) whose
caller already has the current version waits for a newer one, wherever the config came from.
"""

from __future__ import annotations

from dataclasses import dataclass

from configsync.auth.permissions import Caller, authorize_read, sees_secrets
from configsync.configs.reader import Lookup
from configsync.configs.rendering import MEDIA_TYPES
from configsync.errors import Deleted, InvalidInput, NotFound


@dataclass(frozen=True, slots=True)
class ReadRequest:
    service: str
    environment: str
    fmt: str = "json"
    seen: int | None = None  # the version named by If-None-Match
    wait: float = 0.0  # seconds a long poll may wait for a version newer than `seen`

    def behind(self, version: int) -> bool:
        """True when the caller has seen a newer version than `version` (a stale cache)."""
        return self.seen is not None and self.seen > version


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    media_type: str | None
    etag: str
    version: int  # the config's current version: the one the caller has once answered


class Wait:
    """Not yet: the caller has the current version and asked to wait for a newer one."""


WAIT = Wait()


def parse_etag(value: str | None, header: str = "If-None-Match") -> int | None:
    """`"3"`, `W/"3"` or `3` → 3; absent → None; InvalidInput for anything else."""
    if value is None:
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit():
        raise InvalidInput(f'{header} must be a config version in quotes, such as "3"')
    return int(text)


def decide(caller: Caller, found: Lookup, read: ReadRequest) -> Answer | Wait:
    """The answer, WAIT, or the error (NotFound, Deleted, NotRenderable) to raise."""
    authorize_read(caller, read.service, read.environment, found.owner_id, found.exists)
    entry = found.entry
    if entry is None:
        raise NotFound(f"config {read.service}/{read.environment} not found")
    if entry.deleted:
        raise Deleted(
            f"config {read.service}/{read.environment} was deleted at version {entry.version}",
            deleted_at_version=entry.version,
        )
    if read.wait > 0 and read.seen is not None and read.seen >= entry.version:
        return WAIT
    if read.seen == entry.version:
        return Answer(304, b"", None, entry.etag, entry.version)
    body = entry.rendered(read.fmt, masked=not sees_secrets(caller))
    return Answer(200, body, MEDIA_TYPES[read.fmt], entry.etag, entry.version)
