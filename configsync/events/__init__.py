"""The event store. Knows nothing of the API, the config domain or projections."""

from configsync.events.store import (
    GENESIS_HASH,
    ChainReport,
    NewEvent,
    StoredEvent,
    append,
    append_batch,
    format_instant,
    hash_at,
    iter_rows,
    last_position,
    lock_stream,
    read_after,
    read_stream,
    stream_version,
    verify_chain,
    version_at,
)

__all__ = [
    "GENESIS_HASH",
    "ChainReport",
    "NewEvent",
    "StoredEvent",
    "append",
    "append_batch",
    "format_instant",
    "hash_at",
    "iter_rows",
    "last_position",
    "lock_stream",
    "read_after",
    "read_stream",
    "stream_version",
    "verify_chain",
    "version_at",
]
