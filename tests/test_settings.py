"""Settings: the embedded default needs nothing set; production refuses to start without secrets."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from configsync.errors import ConfigurationError
from configsync.settings import Settings
from tests.conftest import clean_env, cli

MASTER = "H4ZzKKTS0q4S6fl+D5G5Ww3Y3d0b9xUXgD1yYfp3nV0="


def test_defaults_are_the_embedded_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "CONFIGSYNC_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.database_url == "sqlite:///./configsync.db"
    assert settings.embedded and settings.is_sqlite
    assert settings.max_document_bytes == 256 * 1024
    assert (settings.max_document_keys, settings.max_document_depth) == (2000, 20)


def test_bare_and_prefixed_names_are_both_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/bare")
    monkeypatch.setenv("REDIS_URL", "redis://r:6379/0")
    monkeypatch.setenv("CONFIGSYNC_MAX_DOCUMENT_KEYS", "50")
    settings = Settings()
    assert settings.database_url == "postgresql://db/bare"
    assert settings.redis_url == "redis://r:6379/0" and not settings.embedded
    assert settings.max_document_keys == 50
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setenv("CONFIGSYNC_DATABASE_URL", "postgresql://db/prefixed")
    assert Settings().database_url == "postgresql://db/prefixed"


@pytest.mark.parametrize("secret", [None, "supersecretkey", "short"])
def test_production_refuses_to_start_without_a_real_secret(secret: str | None) -> None:
    with pytest.raises(ConfigurationError, match="needs a real SECRET_KEY"):
        Settings(env="production", secret_key=secret, master_keys=MASTER)
    assert Settings(env="production", secret_key="k" * 40, master_keys=MASTER).signing_key() == (
        "k" * 40
    )


@pytest.mark.parametrize("keys", [None, "", "  "])
def test_production_refuses_to_start_without_a_master_key(keys: str | None) -> None:
    with pytest.raises(ConfigurationError, match="needs CONFIGSYNC_MASTER_KEYS"):
        Settings(env="production", secret_key="k" * 40, master_keys=keys)


def test_development_master_key_is_generated_once_0600_beside_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/data/configsync.db"
    first = Settings(database_url=url).master_key_text()
    assert Settings(database_url=url).master_key_text() == first
    key_file = tmp_path / "data" / ".configsync-master-key"
    assert key_file.read_text().strip() == first
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(base64.b64decode(first)) == 32


def test_development_secret_is_generated_once_and_kept_beside_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/data/configsync.db"
    first = Settings(database_url=url).signing_key()
    second = Settings(database_url=url).signing_key()
    key_file = tmp_path / "data" / ".configsync-secret-key"
    assert first == second and len(first) >= 48
    assert key_file.read_text().strip() == first
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_serve_in_production_without_a_secret_exits_with_what_to_set(tmp_path: Path) -> None:
    result = cli("serve", "--port", "1", env=clean_env(CONFIGSYNC_ENV="production"), cwd=tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_database_commands_outside_the_clone_refuse_to_make_an_empty_database(
    tmp_path: Path,
) -> None:
    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    for command in (("projections", "status"), ("audit", "verify"), ("backup", "x.backup")):
        result = cli(*command, env=clean_env(), cwd=elsewhere)
        assert result.returncode == 1, command
        assert "no database at" in result.stderr and "configsync migrate" in result.stderr
    assert list(elsewhere.iterdir()) == []  # nothing made there
    assert cli("migrate", env=clean_env(), cwd=elsewhere).returncode == 0  # migrate makes it
    assert cli("projections", "status", env=clean_env(), cwd=elsewhere).returncode == 0
