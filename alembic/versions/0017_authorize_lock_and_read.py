"""A batch's accounts, owners, locks and states by one function; the write path's functions
keep generic plans.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

# Every statement inside the write path's PL/pgSQL functions takes arrays or a stream name as
# parameters, and PostgreSQL's plan cache, left to choose, kept planning them anew for every
# call (a custom plan each time: its cost never looked worse than the generic one's, which is
# the same plan). Per call, one client, commit included (109 us for a bare one):
# configsync_append_batch of one event 456 -> 243 us, configsync_lock_and_read_many of four
# configs 368 -> 247 us, configsync_authorize_lock_and_read 604 -> 331 us. The append's share
# is time under the append lock. Their plans are index lookups by key whatever the values
# (0014 says why), so the generic plan is the plan.
GENERIC = "SET plan_cache_mode = force_generic_plan"
KEPT_PLANS = (
    "configsync_append_batch(bigint, text[], integer[], text[], text[], text[], text[])",
    "configsync_lock_and_read_many(integer, text[], text[], text[])",
)

# configsync.configs.deferred read a batch's writers' accounts and services' owners beside its
# configs' locked states (configsync_lock_and_read_many, 0014) in one statement sent as text:
# PostgreSQL parsed and planned it for every batch, a tenth of its CPU per write under PUT load
# (pg_stat_statements: 0.06 ms of planning a write, beside 0.11 of executing; the parse of its
# text besides). PL/pgSQL keeps the plan of its RETURN QUERY for the connection's life. The
# statement is the same: the accounts and owners are read in the query's snapshot, taken before
# the locks; the states after them (0013's rule); rows in the batch's order.
POSTGRES_AUTHORIZE_LOCK_AND_READ_FUNCTION = f"""
CREATE FUNCTION configsync_authorize_lock_and_read(
    p_namespace integer, p_streams text[], p_services text[], p_environments text[],
    p_users text[], p_jtis text[]
) RETURNS TABLE (
    o_service text, o_environment text, o_version integer, o_data text, o_deleted boolean,
    o_updated_at timestamptz, o_updated_by text, o_position bigint,
    o_service_exists boolean, o_secret_paths text,
    o_email text, o_role text, o_is_active boolean, o_token_generation integer,
    o_revoked boolean, o_service_name text, o_owner_id text
) LANGUAGE plpgsql VOLATILE {GENERIC} AS $$
BEGIN
    RETURN QUERY
        WITH l AS MATERIALIZED (
            SELECT * FROM configsync_lock_and_read_many(
                p_namespace, p_streams, p_services, p_environments
            ) WITH ORDINALITY
        )
        SELECT l.o_service, l.o_environment, l.o_version, l.o_data, l.o_deleted,
               l.o_updated_at, l.o_updated_by, l.o_position, l.o_service_exists,
               l.o_secret_paths,
               u.email::text, u.role::text, u.is_active, u.token_generation,
               EXISTS (SELECT 1 FROM revoked_tokens AS r WHERE r.jti = x.jti),
               s.name::text, s.owner_id::text
        FROM l
        JOIN unnest(p_users, p_jtis, p_services) WITH ORDINALITY AS x(user_id, jti, service, n)
            ON x.n = l.ordinality
        LEFT JOIN LATERAL (SELECT users.email, users.role, users.is_active,
                                  users.token_generation
                           FROM users WHERE users.id = x.user_id LIMIT 1) AS u ON true
        LEFT JOIN LATERAL (SELECT services.name, services.owner_id
                           FROM services WHERE services.name = x.service LIMIT 1) AS s ON true
        ORDER BY l.ordinality;
END;
$$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for function in KEPT_PLANS:
            op.execute(f"ALTER FUNCTION {function} {GENERIC}")
        op.execute(POSTGRES_AUTHORIZE_LOCK_AND_READ_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for function in KEPT_PLANS:
            op.execute(f"ALTER FUNCTION {function} RESET plan_cache_mode")
        op.execute(
            "DROP FUNCTION configsync_authorize_lock_and_read"
            "(integer, text[], text[], text[], text[], text[])"
        )
