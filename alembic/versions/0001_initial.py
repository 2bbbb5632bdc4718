"""The initial schema: the append-only event log, its projections, services, users and API keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from configsync.db import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

POSTGRES_IMMUTABLE_EVENTS = """
CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % on events is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();
CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();
"""

# The append, in one round trip (after message-db's write_message): take the global append lock,
# check the expected version, link to the last event, hash, insert. configsync.events.store
# calls it on PostgreSQL and does the same steps in Python on SQLite; both hash exactly the
# canonical JSON that verify_chain recomputes (stream, type and event_id are restricted to
# characters that need no JSON escaping, so plain concatenation is canonical here).
# A stale expected version returns the actual version and no position instead of raising, so
# the caller's transaction stays usable.
POSTGRES_APPEND_FUNCTION = """
CREATE FUNCTION configsync_append(
    p_lock_key bigint, p_stream text, p_expected_version integer, p_event_id text,
    p_type text, p_data text, p_metadata text
) RETURNS TABLE (
    o_position bigint, o_version integer, o_recorded_at timestamptz, o_prev_hash text,
    o_hash text, o_actual_version integer
) LANGUAGE plpgsql AS $$
DECLARE
    v_actual integer;
    v_last_position bigint;
    v_last_hash text;
    v_last_at timestamptz;
    v_position bigint;
    v_prev text;
    v_at timestamptz;
    v_body text;
    v_hash text;
BEGIN
    -- Each statement of a volatile function takes a new snapshot, so the reads below see
    -- every append that committed while this one waited for the lock.
    PERFORM pg_advisory_xact_lock(p_lock_key);
    SELECT coalesce(max(e.version), 0) INTO v_actual FROM events e WHERE e.stream = p_stream;
    IF v_actual <> p_expected_version THEN
        RETURN QUERY SELECT NULL::bigint, NULL::integer, NULL::timestamptz, NULL::text,
            NULL::text, v_actual;
        RETURN;
    END IF;
    SELECT e.position, e.hash, e.recorded_at INTO v_last_position, v_last_hash, v_last_at
        FROM events e ORDER BY e.position DESC LIMIT 1;
    v_at := clock_timestamp();
    IF v_last_position IS NULL THEN
        v_position := 1;
        v_prev := repeat('0', 64);
    ELSE
        v_position := v_last_position + 1;
        v_prev := v_last_hash;
        v_at := greatest(v_at, v_last_at);  -- time never runs backwards along the log
    END IF;
    v_body := '{"data":' || p_data
        || ',"event_id":"' || p_event_id
        || '","metadata":' || p_metadata
        || ',"position":' || v_position
        || ',"recorded_at":"' || to_char(v_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
        || '","stream":"' || p_stream
        || '","type":"' || p_type
        || '","version":' || (p_expected_version + 1) || '}';
    v_hash := encode(sha256(convert_to(v_prev || v_body, 'UTF8')), 'hex');
    INSERT INTO events (position, event_id, stream, version, type, data, metadata, recorded_at,
                        prev_hash, hash)
        VALUES (v_position, p_event_id, p_stream, p_expected_version + 1, p_type, p_data,
                p_metadata, v_at, v_prev, v_hash);
    RETURN QUERY SELECT v_position, p_expected_version + 1, v_at, v_prev, v_hash, v_actual;
END
$$;
"""

SQLITE_IMMUTABLE_EVENTS = [
    """
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE on events is not allowed'); END
    """,
    """
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE on events is not allowed'); END
    """,
]


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("position", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("stream", sa.String(160), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        # Canonical JSON kept verbatim (text, not JSONB) so hashes recompute from what is read.
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("metadata", sa.Text(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("event_id", name="uq_events_event_id"),
        sa.UniqueConstraint("stream", "version", name="uq_events_stream_version"),
        sa.CheckConstraint("position > 0", name="ck_events_position_positive"),
        sa.CheckConstraint("version > 0", name="ck_events_version_positive"),
    )
    op.create_index("ix_events_stream_recorded_at", "events", ["stream", "recorded_at"])

    op.create_table(
        "users",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False, server_default="user"),
        sa.Column("is_active", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("email", name="uq_users_email"),
        sa.CheckConstraint("role IN ('admin', 'user', 'auditor')", name="ck_users_role"),
    )

    op.create_table(
        "services",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column(
            "owner_id", sa.String(36), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_services_owner_id", "services", ["owner_id"])

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column(
            "service",
            sa.String(63),
            sa.ForeignKey("services.name", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("environment", sa.String(63), nullable=True),
        sa.Column("permission", sa.String(8), nullable=False),
        sa.Column(
            "created_by", sa.String(36), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
        sa.CheckConstraint("permission IN ('read', 'write')", name="ck_api_keys_permission"),
    )
    op.create_index("ix_api_keys_service", "api_keys", ["service"])

    op.create_table(
        "config_current",
        sa.Column("service", sa.String(63), primary_key=True),
        sa.Column("environment", sa.String(63), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_config_current_position", "config_current", ["position"])

    op.create_table(
        "projection_checkpoints",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("position", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )

    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_IMMUTABLE_EVENTS)
        op.execute(POSTGRES_APPEND_FUNCTION)
    else:
        for statement in SQLITE_IMMUTABLE_EVENTS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS events_no_truncate ON events")
        op.execute("DROP TRIGGER IF EXISTS events_no_update_or_delete ON events")
        op.execute("DROP FUNCTION IF EXISTS events_are_append_only()")
        op.execute("DROP FUNCTION IF EXISTS configsync_append")
    for table in ("projection_checkpoints", "config_current", "api_keys", "services", "users"):
        op.drop_table(table)
    op.drop_table("events")
