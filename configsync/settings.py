"""One Settings object, read from the environment.

`DATABASE_URL`, `REDIS_URL`, `SECRET_KEY`, `API_KEY` and `PROJECT_NAME` are read bare, as the
original ConfigSync README documents them (and also with the `CONFIGSYNC_` prefix); everything
else takes the `CONFIGSYNC_` prefix.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from configsync.errors import ConfigurationError

DEFAULT_DATABASE_URL = "sqlite:///./configsync.db"
SECRET_KEY_FILE = ".configsync-secret-key"
LOG_KEY_FILE = ".configsync-log-key"
MASTER_KEY_FILE = ".configsync-master-key"
MIN_SECRET_KEY_LENGTH = 32
# Values that have been published as defaults somewhere and so are no secret at all.
KNOWN_WEAK_SECRETS = frozenset({"", "supersecretkey", "changeme", "changethis", "secret"})


def _bare_or_prefixed(name: str) -> AliasChoices:
    return AliasChoices(name, f"CONFIGSYNC_{name}")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CONFIGSYNC_", populate_by_name=True, extra="ignore", frozen=True
    )

    env: Literal["development", "production"] = "development"
    database_url: str = Field(
        DEFAULT_DATABASE_URL, validation_alias=_bare_or_prefixed("DATABASE_URL")
    )
    redis_url: str | None = Field(None, validation_alias=_bare_or_prefixed("REDIS_URL"))
    secret_key: str | None = Field(None, validation_alias=_bare_or_prefixed("SECRET_KEY"))
    legacy_api_key: str | None = Field(None, validation_alias=_bare_or_prefixed("API_KEY"))
    project_name: str = Field("ConfigSync", validation_alias=_bare_or_prefixed("PROJECT_NAME"))

    access_token_minutes: int = Field(60, ge=1, le=60 * 24 * 30)
    max_document_bytes: int = Field(256 * 1024, ge=1024)
    max_document_keys: int = Field(2000, ge=1)
    max_document_depth: int = Field(20, ge=1, le=100)
    max_reason_length: int = Field(1000, ge=1)
    max_wait_seconds: float = Field(60.0, ge=0)
    history_page_max: int = Field(500, ge=1)
    # How long a write may wait for the broker before it gives up on sending the task (the
    # periodic catch-up projects the event later anyway).
    broker_publish_timeout: float = Field(0.5, gt=0)
    audit_log: str = "logs/config_audit.log"
    catch_up_interval_seconds: float = Field(5.0, gt=0)
    projection_batch_size: int = Field(1000, ge=1, le=100_000)
    # PostgreSQL only: concurrent writes of one API process share transactions and commits
    # (configsync.events.group). Off: each write commits alone.
    group_commit: bool = True
    # PostgreSQL, API processes: how long a statement waits for a lock (the append and stream
    # locks included) before the request fails with 503, and how long a transaction may sit idle
    # before the server ends it. One stuck transaction cannot hold every writer forever.
    # Failed logins allowed in a moving window ("N per M seconds|minutes|hours"), per account
    # and per client address; past either, logins answer 429 with Retry-After.
    login_failures_per_account: str = "10 per 5 minutes"
    login_failures_per_address: str = "50 per 5 minutes"
    # How long an Idempotency-Key is remembered: a retry within it returns the first outcome.
    idempotency_key_hours: float = Field(24.0, gt=0, le=24 * 30)
    lock_timeout_seconds: float = Field(10.0, gt=0, le=600)
    idle_in_transaction_timeout_seconds: float = Field(60.0, gt=0, le=3600)
    # Tests only: seconds to sleep inside each projection batch, before it commits, so a test
    # can kill a worker in the middle of one.
    debug_batch_delay: float = Field(0.0, ge=0)
    log_level: str = "INFO"
    # Process logs and the request log (one line per request: request id, caller, route, status,
    # duration) on standard error, as JSON lines or as text; the request log can be switched off.
    log_format: Literal["json", "text"] = "json"
    access_log: bool = True
    # The transparency log (configsync.audit.log): the name its checkpoints carry, the Ed25519
    # key that signs them (base64 of the 32-byte private seed; generated beside the database in
    # development), how often the worker signs one while the log grows, where each is appended
    # outside the database, and an optional command that gets each one on its standard input.
    log_origin: str = "configsync.local/log"
    log_signing_key: str | None = None
    checkpoint_interval_seconds: float = Field(60.0, ge=0)
    checkpoint_log: str = "logs/checkpoints.log"
    checkpoint_hook: str | None = None
    # Secrets (configsync.secrets): the master keys that wrap every data key (base64 of 32
    # bytes each, comma-separated, newest first; generated beside the database in development,
    # required in production), and the key-name patterns whose values are secret at any depth
    # (comma-separated, case-insensitive; owners declare more per service).
    master_keys: str | None = None
    # /health/ready answers 503 once the oldest event the audit projection has not applied is
    # older than this (the worker stopped or cannot keep up).
    ready_max_audit_lag_seconds: float = Field(60.0, gt=0)
    # Count every request and read for /metrics (off: only writes, conflicts, appends, waiters
    # and logins are counted; bench/read.py measures what counting costs the hot path).
    metrics: bool = True
    # FastAPI's native OpenTelemetry (spans, metrics and logs through the global providers, for
    # a deployment that installs an OpenTelemetry SDK). Off by default: ConfigSync reports
    # through /metrics and its request log, and the check for configured providers costs 7% of
    # a cached read's CPU on every request.
    opentelemetry: bool = False
    # Who may create an account: anybody (`open`, POST /auth/signup, as the original ConfigSync
    # did, whose curl examples must keep working) or only admins (`closed`: POST /v1/users,
    # `configsync users create`).
    signup: Literal["open", "closed"] = "open"
    # How often each API process writes when its API keys were last used (GET /v1/api-keys).
    key_usage_flush_seconds: float = Field(5.0, gt=0)
    # Each API process's cache of current configs, in bytes (about 2.5 KB beyond each answer's
    # size per config); past it the least recently read configs are evicted, one at a time.
    cache_max_bytes: int = Field(256 * 1024 * 1024, ge=1024 * 1024)
    # Fill that cache with the current configs when the change feed connects (at start and
    # after a reconnect), in the background, rather than one database read per first request.
    cache_warm: bool = True
    secret_patterns: str = "*PASSWORD*,*SECRET*,*TOKEN*,*_KEY,*PRIVATE*,*CREDENTIAL*"

    @field_validator("login_failures_per_account", "login_failures_per_address")
    @classmethod
    def _a_rate(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate such as '10 per 5 minutes'") from None
        return value

    @field_validator("log_level")
    @classmethod
    def _a_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"{value!r} is not a log level: one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    @model_validator(mode="after")
    def _refuse_weak_secret_in_production(self) -> Settings:
        if self.env == "production" and not is_strong_secret(self.secret_key):
            raise ConfigurationError(
                "CONFIGSYNC_ENV=production needs a real SECRET_KEY: set SECRET_KEY to at least "
                f"{MIN_SECRET_KEY_LENGTH} random characters, for example the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`."
            )
        if self.env == "production" and not (self.master_keys or "").strip():
            raise ConfigurationError(
                "CONFIGSYNC_ENV=production needs CONFIGSYNC_MASTER_KEYS, the master key that "
                "wraps the keys of every secret value: `configsync keys new-master` prints one. "
                "Keep it apart from the database backups: without it no secret can be read."
            )
        return self

    @property
    def request_log(self) -> bool:
        """A line per request: when switched on and the level shows INFO lines."""
        return self.access_log and LOG_LEVELS.index(self.log_level) <= LOG_LEVELS.index("INFO")

    @property
    def signup_open(self) -> bool:
        return self.signup == "open"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def embedded(self) -> bool:
        """No broker: asynchronous projections run in-process right after each commit."""
        return not self.redis_url

    def signing_key(self) -> str:
        """The key that signs tokens.

        In development with no SECRET_KEY, one is generated once and kept in a file beside the
        database, so that tokens survive a restart without anybody having to set anything.
        """
        if self.secret_key:
            return self.secret_key
        if self.env == "production":  # unreachable: the validator refuses this; kept as a guard
            raise ConfigurationError("SECRET_KEY is not set")
        return _development_secret(self.secret_key_file())

    def secret_key_file(self) -> Path:
        return self._beside_database(SECRET_KEY_FILE)

    def log_key(self) -> str:
        """The transparency log's signing key (base64 of an Ed25519 seed).

        Development generates one beside the database, like the token key; production must set
        CONFIGSYNC_LOG_SIGNING_KEY (a generated key there would sign a log nobody can check).
        """
        if self.log_signing_key:
            return self.log_signing_key
        if self.env == "production":
            raise ConfigurationError(
                "the transparency log needs CONFIGSYNC_LOG_SIGNING_KEY in production: "
                "`configsync log new-key` prints one"
            )
        return _development_secret(self._beside_database(LOG_KEY_FILE), new_log_key)

    def master_key_text(self) -> str:
        """CONFIGSYNC_MASTER_KEYS, or in development a key generated once beside the database
        (0600, like the token and log keys)."""
        if self.master_keys and self.master_keys.strip():
            return self.master_keys
        if self.env == "production":  # unreachable: the validator refuses this; kept as a guard
            raise ConfigurationError("CONFIGSYNC_MASTER_KEYS is not set")
        return _development_secret(self._beside_database(MASTER_KEY_FILE), new_log_key)

    def secret_pattern_list(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.secret_patterns.split(",") if p.strip())

    def _beside_database(self, name: str) -> Path:
        if self.is_sqlite:
            db_path = sqlite_path(self.database_url)
            if db_path is not None:
                return db_path.parent / name
        return Path.cwd() / name


def is_strong_secret(value: str | None) -> bool:
    return (
        value is not None
        and value.lower() not in KNOWN_WEAK_SECRETS
        and len(value) >= MIN_SECRET_KEY_LENGTH
    )


def sqlite_path(url: str) -> Path | None:
    """The file behind a sqlite URL, or None for an in-memory database."""
    _, _, rest = url.partition(":///")
    path = rest.split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path).resolve()


def new_log_key() -> str:
    """32 random bytes as base64: an Ed25519 seed for the log, or an AES-256 master key."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _development_secret(path: Path, make: Callable[[], str] | None = None) -> str:
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    key = make() if make else secrets.token_urlsafe(48)
    # O_EXCL: when two processes start at once, one writes and the other reads what it wrote.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
