"""Backup while writes run; restore into an empty database: the same events, the chain verifies,
projections rebuilt; a tampered file is refused and nothing of it kept."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from configsync.backup import backup, restore
from configsync.db import make_engine, make_session_factory
from configsync.errors import InvalidInput
from configsync.events import verify_chain
from configsync.migrations import upgrade
from projections import current
from tests.conftest import Api, clean_env, cli

URL = "/v1/configs/pay/prod"


@pytest.fixture
def empty_pg(pg_url: str) -> Iterator[Engine]:
    """A second PostgreSQL database, migrated and empty: where backups are restored."""
    target = make_url(pg_url).set(database=f"{make_url(pg_url).database}_restore")
    admin = make_engine(
        make_url(pg_url).set(database="postgres").render_as_string(hide_password=False),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    url = target.render_as_string(hide_password=False)
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
    admin.dispose()


def rows(engine: Engine, sql: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


EVENTS = "SELECT position, event_id, stream, version, data, metadata, hash FROM events ORDER BY 1"


def test_a_backup_taken_while_writes_run_restores_exactly(
    any_api: Api, empty_pg: Engine, tmp_path: Path
) -> None:
    api = any_api
    owner = api.person("owner@example.com")
    api.put(URL, headers=owner, json={"data": {"DB_PASSWORD": "s3cret", "N": 0}})
    key = api.key(owner, "pay")
    stop = threading.Event()

    def keep_writing() -> None:
        n = 1
        while not stop.is_set():
            api.patch(URL, headers=owner, json={"data": {"N": n}})
            n += 1

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        file = tmp_path / "configsync.backup"
        sessions = make_session_factory(api.engine)
        held = backup(sessions, file)
    finally:
        stop.set()
        writer.join(20)
    assert held >= 1 and (file.stat().st_mode & 0o777) == 0o600
    assert b"s3cret" not in file.read_bytes()  # secrets stay sealed

    target = make_session_factory(empty_pg)
    assert restore(target, file) == held
    source_events = [r for r in rows(api.engine, EVENTS) if r[0] <= held]
    assert rows(empty_pg, EVENTS) == source_events
    with target() as session:
        assert verify_chain(session).ok
        assert current.verify(session) == []
    assert rows(empty_pg, "SELECT count(*) FROM audit_log") == [(held,)]
    assert rows(empty_pg, "SELECT email FROM users") == [("owner@example.com",)]
    # The restored store serves the same people, keys and secrets (the same master key).
    from tests.conftest import make_api

    generator = make_api(empty_pg.url.render_as_string(hide_password=False), empty_pg)
    restored = next(generator)
    try:
        answer = restored.get(URL, headers={"X-API-Key": key})
        assert answer.status_code == 200 and answer.json()["data"]["DB_PASSWORD"] == "s3cret"
        assert answer.json()["version"] == rows(empty_pg, "SELECT max(version) FROM events")[0][0]
    finally:
        generator.close()


def test_a_tampered_backup_is_refused_and_nothing_is_kept(
    pg_api: Api, empty_pg: Engine, tmp_path: Path
) -> None:
    owner = pg_api.person("owner@example.com")
    for n in range(3):
        pg_api.put(URL, headers=owner, json={"data": {"N": n}})
    file = tmp_path / "b.jsonl"
    backup(make_session_factory(pg_api.engine), file)
    lines = file.read_text().splitlines()
    for index, line in enumerate(lines):
        item = json.loads(line)
        if item.get("table") == "events" and item["row"]["version"] == 2:
            item["row"]["data"] = item["row"]["data"].replace('"value":1', '"value":7')
            lines[index] = json.dumps(item)
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(lines) + "\n")
    target = make_session_factory(empty_pg)
    with pytest.raises(InvalidInput, match="does not verify"):
        restore(target, tampered)
    assert rows(empty_pg, "SELECT count(*) FROM events") == [(0,)]
    assert rows(empty_pg, "SELECT count(*) FROM users") == [(0,)]
    # Into a database that has data: refused too.
    assert restore(target, file) == 3
    with pytest.raises(InvalidInput, match="empty database"):
        restore(target, file)
    not_a_backup = tmp_path / "x.jsonl"
    not_a_backup.write_text('{"hello": 1}\n')
    with pytest.raises(InvalidInput, match="not a ConfigSync backup"):
        restore(make_session_factory(empty_pg), not_a_backup)


def test_backup_and_restore_from_the_command_line(
    sqlite_api: Api, sqlite_url: str, empty_pg: Engine, tmp_path: Path
) -> None:
    """An embedded SQLite store, backed up by the CLI, restored into PostgreSQL by the CLI."""
    owner = sqlite_api.person("owner@example.com")
    sqlite_api.put(URL, headers=owner, json={"data": {"A": 1}})
    sqlite_api.put(URL, headers=owner, json={"data": {"A": 2}})
    file = tmp_path / "embedded.backup"
    made = cli("backup", str(file), env=clean_env(DATABASE_URL=sqlite_url))
    assert made.returncode == 0, made.stderr
    assert "backed up 2 events" in made.stdout
    pg_url = empty_pg.url.render_as_string(hide_password=False)
    done = cli("restore", str(file), env=clean_env(DATABASE_URL=pg_url))
    assert done.returncode == 0, done.stderr
    assert rows(empty_pg, "SELECT count(*) FROM events") == [(2,)]
    refused = cli("restore", str(file), env=clean_env(DATABASE_URL=pg_url))
    assert refused.returncode == 1 and "empty database" in refused.stderr
