"""Append several events in one call: the store's group commit.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# configsync_append (0001) for a batch: one lock, one read of the last event, then for each item
# the expected-version check, the link, the hash and the insert, exactly as before. Items are
# independent: a stale expected version returns that item's actual version and no position,
# and the items after it are still appended (two items of one stream in a batch see each other,
# so the second may expect the first's version). Rows come back in the order of the arrays.
POSTGRES_APPEND_BATCH_FUNCTION = """
CREATE FUNCTION configsync_append_batch(
    p_lock_key bigint, p_streams text[], p_expected_versions integer[], p_event_ids text[],
    p_types text[], p_data text[], p_metadata text[]
) RETURNS TABLE (
    o_index integer, o_position bigint, o_recorded_at timestamptz, o_prev_hash text,
    o_hash text, o_actual_version integer
) LANGUAGE plpgsql AS $$
DECLARE
    v_actual integer;
    v_position bigint;
    v_prev text;
    v_last_at timestamptz;
    v_at timestamptz;
    v_body text;
    v_hash text;
BEGIN
    -- Held to commit: positions become visible in order and without gaps (configsync.events).
    -- Each statement of a volatile function takes a new snapshot, so the reads below see
    -- every append that committed while this one waited for the lock.
    PERFORM pg_advisory_xact_lock(p_lock_key);
    SELECT e.position, e.hash, e.recorded_at INTO v_position, v_prev, v_last_at
        FROM events e ORDER BY e.position DESC LIMIT 1;
    IF v_position IS NULL THEN
        v_position := 0;
        v_prev := repeat('0', 64);
    END IF;
    FOR i IN 1 .. coalesce(array_length(p_streams, 1), 0) LOOP
        SELECT coalesce(max(e.version), 0) INTO v_actual
            FROM events e WHERE e.stream = p_streams[i];
        IF v_actual <> p_expected_versions[i] THEN
            o_index := i; o_position := NULL; o_recorded_at := NULL; o_prev_hash := NULL;
            o_hash := NULL; o_actual_version := v_actual;
            RETURN NEXT;
            CONTINUE;
        END IF;
        v_position := v_position + 1;
        -- time never runs backwards along the log
        v_at := greatest(clock_timestamp(), v_last_at);
        v_body := '{"data":' || p_data[i]
            || ',"event_id":"' || p_event_ids[i]
            || '","metadata":' || p_metadata[i]
            || ',"position":' || v_position
            || ',"recorded_at":"'
            || to_char(v_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
            || '","stream":"' || p_streams[i]
            || '","type":"' || p_types[i]
            || '","version":' || (p_expected_versions[i] + 1) || '}';
        v_hash := encode(sha256(convert_to(v_prev || v_body, 'UTF8')), 'hex');
        INSERT INTO events (position, event_id, stream, version, type, data, metadata,
                            recorded_at, prev_hash, hash)
            VALUES (v_position, p_event_ids[i], p_streams[i], p_expected_versions[i] + 1,
                    p_types[i], p_data[i], p_metadata[i], v_at, v_prev, v_hash);
        o_index := i; o_position := v_position; o_recorded_at := v_at; o_prev_hash := v_prev;
        o_hash := v_hash; o_actual_version := v_actual;
        RETURN NEXT;
        v_prev := v_hash;
        v_last_at := v_at;
    END LOOP;
END
$$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_APPEND_BATCH_FUNCTION)
        # A single append is a batch of one now: one function, one way to append.
        op.execute("DROP FUNCTION configsync_append")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_single_append_function())
        op.execute("DROP FUNCTION configsync_append_batch")


def _single_append_function() -> str:
    """Revision 0001's text of the single-event function, which the downgrade restores."""
    path = Path(__file__).with_name("0001_initial.py")
    spec = importlib.util.spec_from_file_location("configsync_revision_0001", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.POSTGRES_APPEND_FUNCTION)
