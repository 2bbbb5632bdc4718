"""A write's lock and reads in one round trip: configsync_lock_and_read.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# What every config write does first (configsync.configs.commands): take the stream's lock, then
# read the config's current row and its service's declared secret paths. PL/pgSQL runs each
# statement of a VOLATILE function on a snapshot of its own, so under READ COMMITTED the read
# below, taken after the lock is granted, sees everything the writer that held the lock before
# committed: exactly what the separate statements saw, in one round trip instead of three. The
# lock key is events.store's (STREAM_LOCK_NAMESPACE, hashtext(stream)). A config that does not
# exist comes back as a row of NULLs beside its service's columns (NULL too if there is none).
POSTGRES_LOCK_AND_READ_FUNCTION = """
CREATE FUNCTION configsync_lock_and_read(
    p_namespace integer, p_stream text, p_service text, p_environment text
) RETURNS TABLE (
    o_version integer, o_data text, o_deleted boolean, o_updated_at timestamptz,
    o_updated_by text, o_position bigint, o_service_exists boolean, o_secret_paths text
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(p_namespace, hashtext(p_stream));
    RETURN QUERY
        SELECT c.version, c.data, c.deleted, c.updated_at, c.updated_by, c.position,
               s.name IS NOT NULL, s.secret_paths
        FROM (SELECT 1) AS one
        LEFT JOIN config_current AS c
               ON c.service = p_service AND c.environment = p_environment
        LEFT JOIN services AS s ON s.name = p_service;
END;
$$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_LOCK_AND_READ_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION configsync_lock_and_read")
