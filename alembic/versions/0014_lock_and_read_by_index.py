"""A batch's reads by index whatever the tables' statistics: configsync_lock_and_read_many.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# 0013's read joined the batch's names to config_current and services as plain joins, and the
# planner, told the names are about ten rows and the tables small (a new deployment's tables
# have no statistics until autovacuum's first analyze), read both tables whole and hashed them:
# every batch scanned every config (0.7 ms at 1,000 configs in PostgreSQL's own EXPLAIN ANALYZE,
# growing with the table). A batch names at most a few dozen configs, each found by its primary
# key: each join is now a lateral lookup (`LIMIT 1` keeps the planner from flattening it back
# into a join), so the plan is an index scan per name at any size (0.1 ms for four). Same
# locks, same snapshot rule, same rows in the same order as 0013.
POSTGRES_LOCK_AND_READ_MANY_FUNCTION = """
CREATE OR REPLACE FUNCTION configsync_lock_and_read_many(
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
        LEFT JOIN LATERAL (
            SELECT * FROM config_current
            WHERE config_current.service = w.service
              AND config_current.environment = w.environment
            LIMIT 1
        ) AS c ON true
        LEFT JOIN LATERAL (
            SELECT services.name, services.secret_paths FROM services
            WHERE services.name = w.service
            LIMIT 1
        ) AS s ON true
        ORDER BY w.i;
END;
$$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_LOCK_AND_READ_MANY_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_previous_function().replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))


def _previous_function() -> str:
    """Revision 0013's text of the function, which the downgrade restores."""
    path = Path(__file__).with_name("0013_lock_and_read_many.py")
    spec = importlib.util.spec_from_file_location("configsync_revision_0013", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.POSTGRES_LOCK_AND_READ_MANY_FUNCTION)
