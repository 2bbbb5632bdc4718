"""The event store. Knows nothing of the API, the config domain or projections."""

from configsync.events.store import (
    CONFIG_CHANGED,
    GENESIS_HASH,
    ChainReport,
    StoredEvent,
    append,
    format_instant,
    iter_all,
    last_position,
    lock_stream,
    read_after,
    read_stream,
    split_stream,
    stream_name,
    stream_version,
    verify_chain,
    version_at,
)

__all__ = [
    "CONFIG_CHANGED",
    "GENESIS_HASH",
    "ChainReport",
    "StoredEvent",
    "append",
    "format_instant",
    "iter_all",
    "last_position",
    "lock_stream",
    "read_after",
    "read_stream",
    "split_stream",
    "stream_name",
    "stream_version",
    "verify_chain",
    "version_at",
]
