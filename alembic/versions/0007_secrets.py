"""Secrets: the data keys that seal secret values (wrapped by a master key), and the key paths
each service declares secret.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from configsync.db import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "secret_keys",
        sa.Column("id", sa.String(160), primary_key=True),
        sa.Column("service", sa.String(63), nullable=False),
        sa.Column("environment", sa.String(63), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("master_key_id", sa.String(16), nullable=False),
        sa.Column("wrapped", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("destroyed_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_secret_keys_service", "secret_keys", ["service"])
    # A plain ADD COLUMN on both dialects: a batch copy of `services` on SQLite would drop the
    # table, and with it (ON DELETE CASCADE) every API key.
    op.add_column(
        "services", sa.Column("secret_paths", sa.Text(), nullable=False, server_default="[]")
    )


def downgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.drop_column("secret_paths")
    op.drop_index("ix_secret_keys_service", table_name="secret_keys")
    op.drop_table("secret_keys")
