"""The transparency log: the Merkle tree's nodes, signed checkpoints, checkpoint hashes, and an
append-only audit_log.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from configsync.db import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# audit_log takes no UPDATE, DELETE or TRUNCATE, except inside a rebuild of the audit projection,
# which marks its own transaction with a row in projection_rebuilds (no other transaction sees it).
POSTGRES_AUDIT_APPEND_ONLY = """
CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND EXISTS (SELECT 1 FROM projection_rebuilds WHERE name = 'audit') THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % on audit_log is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_no_update_or_delete
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
"""
SQLITE_AUDIT_APPEND_ONLY = [
    """
    CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE on audit_log is not allowed'); END
    """,
    """
    CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    WHEN NOT EXISTS (SELECT 1 FROM projection_rebuilds WHERE name = 'audit')
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: DELETE on audit_log is not allowed'); END
    """,
]


def upgrade() -> None:
    op.create_table(
        "merkle_nodes",
        sa.Column("level", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("index", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("level", "index"),
    )
    op.create_table(
        "log_checkpoints",
        sa.Column("tree_size", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("root_hash", sa.String(64), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("signed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tree_size"),
    )
    op.create_table(
        "projection_rebuilds",
        sa.Column("name", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("projection_checkpoints") as batch:
        batch.add_column(sa.Column("event_hash", sa.String(64), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_AUDIT_APPEND_ONLY)
    else:
        for statement in SQLITE_AUDIT_APPEND_ONLY:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_log_no_truncate ON audit_log")
        op.execute("DROP TRIGGER audit_log_no_update_or_delete ON audit_log")
        op.execute("DROP FUNCTION audit_log_is_append_only()")
    else:
        op.execute("DROP TRIGGER audit_log_no_delete")
        op.execute("DROP TRIGGER audit_log_no_update")
    with op.batch_alter_table("projection_checkpoints") as batch:
        batch.drop_column("event_hash")
    op.drop_table("projection_rebuilds")
    op.drop_table("log_checkpoints")
    op.drop_table("merkle_nodes")
