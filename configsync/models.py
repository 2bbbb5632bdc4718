"""Import every table so that Base.metadata knows the whole schema (Alembic, tests)."""

from __future__ import annotations


def import_all_models() -> None:
    import configsync.audit.log
    import configsync.auth.models
    import configsync.configs.idempotency
    import configsync.configs.receipts
    import configsync.events.models
    import configsync.secrets.models  # noqa: F401
    import projections.base
    import projections.registry  # noqa: F401  (every projection, and so its tables)
