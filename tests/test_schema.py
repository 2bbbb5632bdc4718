"""The models and the migrations describe the same schema, on both dialects."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from configsync.db import Base
from configsync.models import import_all_models
from projections.registry import ASYNCHRONOUS, INLINE


def test_a_database_upgraded_to_head_matches_the_models(engine: Engine) -> None:
    import_all_models()
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert differences == []


def test_every_projection_table_is_known_to_the_models() -> None:
    import_all_models()
    for table in (
        "config_current",
        "config_snapshots",
        "audit_log",
        "projection_checkpoints",
        "merkle_nodes",
    ):
        assert table in Base.metadata.tables
    assert {p.name for p in INLINE} | {p.name for p in ASYNCHRONOUS} == {
        "current",
        "snapshots",
        "audit",
        "merkle",
    }
