"""Run Alembic migrations from code: `configsync migrate`, `make run`, the tests."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

from alembic import command
from configsync.db import normalize_url


def _alembic_ini() -> Path:
    # alembic/ sits at the top of the repository, beside the package (editable installs and the
    # Docker image both keep that layout); the working folder is the fallback.
    for root in (Path(__file__).resolve().parents[1], Path.cwd()):
        candidate = root / "alembic.ini"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("alembic.ini not found beside the package or in the working folder")


def alembic_config(database_url: str) -> Config:
    config = Config(str(_alembic_ini()))
    config.attributes["database_url"] = normalize_url(database_url)
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)
