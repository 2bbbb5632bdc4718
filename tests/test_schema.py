"""The models and the migrations describe the same schema, on both dialects."""

from __future__ import annotations

import json

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


def test_documents_are_compressed_with_lz4_on_postgresql(pg: Engine) -> None:
    """Migration 0016: a document past the TOAST threshold is stored lz4-compressed (faster
    than pglz on every write and every read under the stream lock), and reads back whole."""
    from sqlalchemy import text

    from configsync.configs import commands
    from configsync.configs.commands import WriteContext
    from configsync.db import make_session_factory, unit_of_work
    from configsync.domain.actor import SYSTEM
    from configsync.secrets.vault import Vault

    document = {f"KEY_{i:03d}": f"value {i} " * 8 for i in range(60)}  # ~6 KB of JSON
    ctx = WriteContext(actor=SYSTEM, vault=Vault.ephemeral())
    with unit_of_work(make_session_factory(pg)) as session:
        commands.replace(session, "svc", "prod", document, ctx)
    with pg.connect() as conn:
        methods = conn.execute(
            text(
                "SELECT attrelid::regclass::text, attcompression FROM pg_attribute "
                "WHERE attname = 'data' AND attrelid IN ('config_current'::regclass, "
                "'events'::regclass) ORDER BY 1"
            )
        ).all()
        stored = conn.execute(
            text("SELECT pg_column_compression(data), data FROM config_current")
        ).one()
    assert methods == [("config_current", "l"), ("events", "l")]
    assert stored[0] == "lz4"
    assert json.loads(stored[1]) == document


def test_the_write_paths_functions_keep_generic_plans_on_postgresql(pg: Engine) -> None:
    """Migration 0017: the functions every config write calls plan their statements once per
    connection (left to choose, PostgreSQL planned them anew at every call), and the batch's
    accounts and owners are read by a function of their own."""
    from sqlalchemy import text

    with pg.connect() as conn:
        settings = dict(
            conn.execute(
                text(
                    "SELECT proname, array_to_string(proconfig, ',') FROM pg_proc WHERE proname"
                    " IN ('configsync_append_batch', 'configsync_lock_and_read_many',"
                    " 'configsync_authorize_lock_and_read')"
                )
            ).all()
        )
    assert settings == dict.fromkeys(
        (
            "configsync_append_batch",
            "configsync_lock_and_read_many",
            "configsync_authorize_lock_and_read",
        ),
        "plan_cache_mode=force_generic_plan",
    )
