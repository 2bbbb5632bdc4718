"""Many writes' locks and reads in one round trip: configsync_lock_and_read_many.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# configsync_lock_and_read (0012) for a group commit's batch of writes (configsync.configs
# .commands.decide_and_record): take every stream's lock, then read each config's current row
# and its service's declared secret paths, one row per write in the order of the arrays.
# The locks are taken in the order of their keys, whatever the order of the writes, so two
# batches (of two API processes) that share streams wait for each other instead of
# deadlocking. The lock key is events.store's (STREAM_LOCK_NAMESPACE, hashtext(stream)). As in
# 0012, the read is a statement of its own taken after every lock is granted: under READ
# COMMITTED it sees everything the writers that held those locks before committed.
POSTGRES_LOCK_AND_READ_MANY_FUNCTION = """
CREATE FUNCTION configsync_lock_and_read_many(
    p_namespace integer, p_streams text[], p_services text[], p_environments text[]
) RETURNS TABLE (
    o_service text, o_environment text, o_version integer, o_data text, o_deleted boolean,
    o_updated_at timestamptz, o_updated_by text, o_position bigint,
    o_service_exists boolean, o_secret_paths text
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_key integer;
BEGIN
    FOR v_key IN SELECT DISTINCT hashtext(s) FROM unnest(p_streams) AS s ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(p_namespace, v_key);
    END LOOP;
    RETURN QUERY
        SELECT w.service, w.environment, c.version, c.data, c.deleted, c.updated_at, c.updated_by,
               c.position, s.name IS NOT NULL, s.secret_paths
        FROM unnest(p_services, p_environments) WITH ORDINALITY AS w(service, environment, i)
        LEFT JOIN config_current AS c
               ON c.service = w.service AND c.environment = w.environment
        LEFT JOIN services AS s ON s.name = w.service
        ORDER BY w.i;
END;
$$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_LOCK_AND_READ_MANY_FUNCTION)
        # One write is a batch of one: one function, one way to lock and read.
        op.execute("DROP FUNCTION configsync_lock_and_read")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_single_function())
        op.execute("DROP FUNCTION configsync_lock_and_read_many")


def _single_function() -> str:
    """Revision 0012's text of the single-write function, which the downgrade restores."""
    path = Path(__file__).with_name("0012_lock_and_read.py")
    spec = importlib.util.spec_from_file_location("configsync_revision_0012", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.POSTGRES_LOCK_AND_READ_FUNCTION)
