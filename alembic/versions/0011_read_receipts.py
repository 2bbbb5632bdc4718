"""Read receipts: the version of each config each API key last fetched.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from configsync.db import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "read_receipts",
        sa.Column(
            "key_id",
            sa.String(36),
            sa.ForeignKey("api_keys.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("service", sa.String(63), primary_key=True),
        sa.Column("environment", sa.String(63), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("read_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("read_receipts")
