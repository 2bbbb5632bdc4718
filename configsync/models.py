"""Import every table so that Base.metadata knows the whole schema (Alembic, tests)."""

from __future__ import annotations


def import_all_models() -> None:
    import configsync.auth.models  # noqa: F401
    import configsync.configs.models  # noqa: F401
    import configsync.events.models  # noqa: F401
    import projections.base  # noqa: F401
    import projections.current  # noqa: F401
