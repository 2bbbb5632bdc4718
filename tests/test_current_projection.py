"""The `current` projection: inline with appends, rebuilt and verified from the events."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from configsync.auth.models import UserRow
from configsync.configs import commands
from configsync.configs.commands import WriteContext
from configsync.db import unit_of_work
from configsync.domain.actor import Actor
from configsync.secrets.vault import Vault
from projections import current
from tests.conftest import clean_env, cli

VAULT = Vault.ephemeral()

CTX = WriteContext(vault=VAULT, actor=Actor(kind="user", id="u1", name="owner@example.com"))


def _rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT * FROM config_current ORDER BY service, environment")
        ).all()


def _history(sessions: sessionmaker[Session]) -> None:
    with unit_of_work(sessions) as s:
        s.add(UserRow(id="u1", email="u1@example.com", password_hash="x", role="user"))
    for i in range(6):
        with unit_of_work(sessions) as s:
            commands.replace(s, f"svc{i % 3}", "prod", {"N": i, "nested": {"k": [i]}}, CTX)
    with unit_of_work(sessions) as s:
        commands.patch(s, "svc0", "staging", {"A": 1}, CTX)
    with unit_of_work(sessions) as s:
        commands.delete(s, "svc1", "prod", CTX)


def test_rebuild_after_deleting_the_rows_gives_back_the_same_rows(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    _history(sessions)
    before = _rows(engine)
    assert len(before) == 4
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM config_current"))
    assert _rows(engine) == []

    with unit_of_work(sessions) as s:
        assert current.rebuild(s) == 8

    assert _rows(engine) == before
    with sessions() as s:
        assert current.verify(s) == []
        assert current.position(s) == 8


def test_verify_names_a_stream_whose_row_differs_from_its_events(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    _history(sessions)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE config_current SET data = :data WHERE service = 'svc2'"),
            {"data": '{"N":99}'},
        )
        conn.execute(
            text("DELETE FROM config_current WHERE service = 'svc0' AND environment = 'staging'")
        )
    with sessions() as s:
        mismatches = {m.stream: m.reason for m in current.verify(s)}
    assert mismatches == {
        "svc2/prod": "document differs from the fold of its events",
        "svc0/staging": "missing from the projection",
    }


def test_operator_commands_rebuild_verify_and_check_the_chain(pg: Engine, pg_url: str) -> None:
    sessions = sessionmaker(bind=pg, expire_on_commit=False)
    _history(sessions)
    env = clean_env(DATABASE_URL=pg_url)
    with pg.begin() as conn:
        conn.execute(text("UPDATE config_current SET version = 1 WHERE service = 'svc0'"))

    failed = cli("projections", "verify", env=env)
    assert failed.returncode == 1 and "MISMATCH svc0/prod" in failed.stdout

    rebuilt = cli("projections", "rebuild", "current", env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "from 8 events" in rebuilt.stdout
    assert cli("projections", "verify", env=env).returncode == 0

    chain = cli("audit", "verify", env=env)
    assert chain.returncode == 0 and '"ok": true' in chain.stdout and '"checked": 8' in chain.stdout
    with pg.begin() as conn:
        conn.execute(text("ALTER TABLE events DISABLE TRIGGER events_no_update_or_delete"))
        conn.execute(text("UPDATE events SET stream = 'svc9/prod' WHERE position = 5"))
        conn.execute(text("ALTER TABLE events ENABLE TRIGGER events_no_update_or_delete"))
    broken = cli("audit", "verify", env=env)
    assert broken.returncode == 1 and '"first_bad_position": 5' in broken.stdout


@pytest.mark.parametrize("command", [["projections", "verify"], ["audit", "verify"]])
def test_operator_commands_work_on_the_embedded_database(
    sqlite_url: str, sqlite: Engine, command: list[str]
) -> None:
    _history(sessionmaker(bind=sqlite, expire_on_commit=False))
    result = cli(*command, env=clean_env(DATABASE_URL=sqlite_url))
    assert result.returncode == 0, result.stdout + result.stderr
