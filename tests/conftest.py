"""Fixtures: real PostgreSQL and Redis (from CONFIGSYNC_TEST_*), fresh SQLite files.

Without CONFIGSYNC_REQUIRE_SERVICES, a test that needs a server that is not there is skipped
with the reason; with it (CI), such a test fails.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from configsync.db import make_engine, make_session_factory
from configsync.migrations import upgrade

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/configsync_test"
DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/15"
REQUIRE_SERVICES = os.environ.get("CONFIGSYNC_REQUIRE_SERVICES", "") not in ("", "0", "false")

# Tables emptied between PostgreSQL tests, children first.
TABLES = [
    "audit_log",
    "api_keys",
    "services",
    "users",
    "config_current",
    "config_snapshots",
    "projection_checkpoints",
    "idempotency_keys",
    "merkle_nodes",
    "log_checkpoints",
    "secret_keys",
    "revoked_tokens",
    "events",
]
APPEND_ONLY = ["events", "audit_log"]  # their triggers refuse TRUNCATE, as they should


def missing_service(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (CONFIGSYNC_REQUIRE_SERVICES is set)")
    pytest.skip(reason)


def database_url_for_tests() -> str:
    return os.environ.get("CONFIGSYNC_TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)


def redis_url_for_tests() -> str:
    return os.environ.get("CONFIGSYNC_TEST_REDIS_URL", DEFAULT_TEST_REDIS_URL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ensure_database(url: str) -> None:
    """Create the test database if the server is there and the database is not."""
    target = make_url(url)
    admin = make_engine(
        target.set(database="postgres").render_as_string(hide_password=False),
        isolation_level="AUTOCOMMIT",
    )
    try:
        with admin.connect() as conn:
            exists = conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": target.database},
            )
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    finally:
        admin.dispose()


@pytest.fixture
def redis_url() -> str:
    """The test Redis database, emptied."""
    import redis

    url = redis_url_for_tests()
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        client.flushdb()
    except Exception as exc:
        missing_service(f"Redis is not reachable at {url}: {exc}")
    return url


@pytest.fixture(scope="session")
def pg_url() -> str:
    url = database_url_for_tests()
    try:
        _ensure_database(url)
        upgrade(url)
    except Exception as exc:  # no server, refused, bad credentials
        missing_service(f"PostgreSQL is not reachable at {url}: {exc.__class__.__name__}: {exc}")
    return url


@pytest.fixture(scope="session")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url, pool_size=25, max_overflow=10)
    yield engine
    engine.dispose()


def reset_postgres(engine: Engine) -> None:
    # TRUNCATE on events is refused by its trigger (that is the point of it); the tests switch
    # the triggers off for the length of this one transaction, as the superuser they run as.
    with engine.begin() as conn:
        for table in APPEND_ONLY:
            conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))
        for table in APPEND_ONLY:
            conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))


@pytest.fixture
def pg(pg_engine: Engine) -> Engine:
    """The PostgreSQL test database, emptied."""
    reset_postgres(pg_engine)
    return pg_engine


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / f"configsync-{uuid.uuid4().hex[:8]}.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def sqlite(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest) -> Engine:
    """Each test using this runs twice: on PostgreSQL and on the embedded SQLite."""
    fixture: Engine = request.getfixturevalue("pg" if request.param == "postgresql" else "sqlite")
    return fixture


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as s:
        yield s


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.scalar(text(sql), params)


def eventually(check: Any, seconds: float = 20.0, every: float = 0.05) -> Any:
    """Poll `check` until it returns something true or the time is up; return its last value."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def wait_for_http(url: str, seconds: float = 30.0) -> None:
    import httpx

    def answers() -> bool:
        try:
            httpx.get(url, timeout=1)
            return True
        except httpx.HTTPError:
            return False

    assert eventually(answers, seconds, every=0.2), f"{url} did not answer"


@contextlib.contextmanager
def running_server(
    cwd: Path, env: dict[str, str], *args: str, port: int | None = None
) -> Iterator[str]:
    """`configsync serve` as a real process on a free port (or `port`); yields its base URL."""
    import signal
    import subprocess
    import sys

    port = port or free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("configsync")), "serve", "--port", str(port), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url + "/health/live")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


def clean_env(**overrides: str) -> dict[str, str]:
    """The environment for a subprocess, without any ConfigSync setting of ours leaking in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CONFIGSYNC_")
        and k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "API_KEY", "PROJECT_NAME")
    }
    env.update(overrides)
    return env


def cli_login(
    server: str, home: Path, email: str = "ops@example.com"
) -> tuple[dict[str, str], dict[str, str]]:
    """Sign `email` up on `server` and log the command line in, its files under `home`: the
    CLI's environment and the account's auth header."""
    import json

    import httpx

    env = clean_env(
        CONFIGSYNC_URL=server,
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_CACHE_HOME=str(home / "cache"),
    )
    httpx.post(server + "/auth/signup", json={"email": email, "password": PASSWORD})
    login = cli("login", email, env=env, stdin=PASSWORD + "\n")
    assert login.returncode == 0, login.stderr
    saved = json.loads((home / "config" / "configsync" / "credentials.json").read_text())
    return env, {"Authorization": f"Bearer {saved['access_token']}"}


def cli(*args: str, env: dict[str, str], cwd: Path | None = None, stdin: str | None = None) -> Any:
    """Run the installed `configsync` command."""
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("configsync")
    return subprocess.run(
        [str(exe), *args],
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- the HTTP API ---------------------------------------------------------------------------

TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"
LOG_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  # the tests' log signing key (a seed)
MASTER_KEY = "H4ZzKKTS0q4S6fl+D5G5Ww3Y3d0b9xUXgD1yYfp3nV0="  # the tests' secrets master key
PASSWORD = "password123"


@functools.cache
def password_hash() -> str:
    from configsync.auth.passwords import hash_password

    return hash_password(PASSWORD)


class Api:
    """A TestClient on create_app(), with helpers to make people and log them in."""

    def __init__(self, client: Any, engine: Engine, url: str) -> None:
        self.client = client
        self.engine = engine
        self.url = url

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def signup(self, email: str, password: str = PASSWORD) -> str:
        response = self.client.post("/auth/signup", json={"email": email, "password": password})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def token(self, email: str, password: str = PASSWORD) -> dict[str, str]:
        response = self.client.post("/auth/login", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    def person(self, email: str, role: str = "user") -> dict[str, str]:
        """An account with `role` and its auth headers, made straight in the database.

        Sign-up and login have tests of their own; going around them here keeps the many
        fixtures that need people from paying for argon2 (about 0.1 s a hash) again and again.
        """
        from configsync.auth import tokens

        user_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (id, email, password_hash, role, is_active, created_at) "
                    "VALUES (:id, :email, :hash, :role, true, :now)"
                ),
                {
                    "id": user_id,
                    "email": email,
                    "hash": password_hash(),
                    "role": role,
                    "now": now.replace(tzinfo=None)
                    if self.engine.dialect.name == "sqlite"
                    else now,
                },
            )
        token, _ = tokens.issue(user_id, role, key=TEST_SECRET, minutes=60)
        return {"Authorization": f"Bearer {token}"}

    def key(
        self, headers: dict[str, str], service: str, permission: str = "read", **extra: Any
    ) -> str:
        body = {
            "name": f"{service}-{permission}",
            "service": service,
            "permission": permission,
            **extra,
        }
        response = self.client.post("/v1/api-keys", headers=headers, json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["key"])

    def events(self) -> int:
        return int(scalar(self.engine, "SELECT count(*) FROM events"))


class SchemaCheck:
    """Every JSON answer a test receives must match the schema its route declares: the
    response model for its status (errors: configsync.http.ErrorOut), extra fields refused."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.adapters: dict[Any, Any] = {}

    @property
    def routes(self) -> list[Any]:
        """The app's routes (read on each answer: a test may add some), routers flattened.

        FastAPI keeps an included router whole; ours are included without a prefix."""
        from fastapi.routing import APIRoute

        found: list[Any] = []
        pending = list(self.app.routes)
        while pending:
            route = pending.pop(0)
            if isinstance(route, APIRoute):
                found.append(route)
            elif hasattr(route, "original_router"):
                pending.extend(route.original_router.routes)
        return found

    def __call__(self, response: Any) -> None:
        from pydantic import TypeAdapter
        from starlette.routing import Match

        from configsync.http import ErrorOut

        if not response.headers.get("content-type", "").startswith("application/json"):
            return
        response.read()
        request = response.request
        scope = {
            "type": "http",
            "path": request.url.path,
            "root_path": "",
            "method": request.method,
        }
        route = next((r for r in self.routes if r.matches(scope)[0] == Match.FULL), None)
        status = response.status_code
        declared = route.responses.get(status, {}).get("model") if route else None
        if route is None and status < 400:
            return  # not an API route: /openapi.json, /docs
        model = declared or (ErrorOut if status >= 400 else route and route.response_model)
        assert model is not None, f"{request.method} {request.url.path} declares no response model"
        if model not in self.adapters:
            self.adapters[model] = TypeAdapter(model)
        try:
            self.adapters[model].validate_json(response.content)
        except Exception as exc:
            raise AssertionError(
                f"{request.method} {request.url.path} answered {status} with a body that does "
                f"not match {getattr(model, '__name__', model)}: {exc}\n{response.text[:500]}"
            ) from None


def make_api(
    url: str, engine: Engine, *, wait_for_feed: bool = True, **settings: Any
) -> Iterator[Api]:
    import shutil
    import tempfile

    from fastapi.testclient import TestClient

    from configsync.app import create_app
    from configsync.settings import Settings

    logs = tempfile.mkdtemp(prefix="configsync-logs-")
    settings.setdefault("audit_log", f"{logs}/audit.log")
    settings.setdefault("checkpoint_log", f"{logs}/checkpoints.log")
    settings.setdefault("log_signing_key", LOG_KEY)
    settings.setdefault("master_keys", MASTER_KEY)
    # Tests count cache hits and database reads: the background warm-up would race them. It
    # has tests of its own (tests/test_cache.py).
    settings.setdefault("cache_warm", False)
    app = create_app(Settings(database_url=url, secret_key=TEST_SECRET, **settings))
    try:
        with TestClient(app) as client:
            client.event_hooks["response"].append(SchemaCheck(app))
            feed = app.state.change_feed
            if feed is not None and wait_for_feed:
                assert feed.connected.wait(10), "the change feed did not connect"
            yield Api(client, engine, url)
    finally:
        shutil.rmtree(logs, ignore_errors=True)


@pytest.fixture
def pg_api(pg: Engine, pg_url: str) -> Iterator[Api]:
    yield from make_api(pg_url, pg)


@pytest.fixture
def sqlite_api(sqlite: Engine, sqlite_url: str) -> Iterator[Api]:
    yield from make_api(sqlite_url, sqlite)


@pytest.fixture(params=["postgresql", "sqlite"])
def any_api(request: pytest.FixtureRequest) -> Api:
    fixture: Api = request.getfixturevalue(
        "pg_api" if request.param == "postgresql" else "sqlite_api"
    )
    return fixture
