"""The SQL filter of "configs this caller may read" and the per-config rule agree."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from configsync.auth.permissions import Caller, can_read
from configsync.configs import commands, queries
from configsync.configs.commands import WriteContext
from configsync.db import unit_of_work
from configsync.domain.actor import Actor
from configsync.secrets.vault import Vault

VAULT = Vault.ephemeral()

CONFIGS = [("pay", "prod"), ("pay", "staging"), ("web", "prod"), ("web", "staging")]
OWNERS = {"pay": "u1", "web": "u2"}

CALLERS = [
    Caller(kind="user", id="admin", name="admin@example.com", role="admin"),
    Caller(kind="user", id="auditor", name="auditor@example.com", role="auditor"),
    Caller(kind="user", id="u1", name="u1@example.com", role="user"),
    Caller(kind="user", id="u2", name="u2@example.com", role="user"),
    Caller(kind="user", id="u3", name="u3@example.com", role="user"),  # owns nothing
    Caller(kind="api_key", id="k1", name="k1", service="pay", permission="read"),
    Caller(
        kind="api_key", id="k2", name="k2", service="pay", environment="prod", permission="write"
    ),
    Caller(
        kind="api_key", id="k3", name="k3", service="web", environment="staging", permission="read"
    ),
    Caller(kind="api_key", id="k4", name="k4", service="gone", permission="read"),
    Caller(kind="legacy_key", id="legacy", name="API_KEY", permission="read"),
]


@pytest.fixture
def configs(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    with unit_of_work(sessions) as s:
        for user in ("admin", "auditor", "u1", "u2", "u3"):
            s.execute(
                text(
                    "INSERT INTO users (id, email, password_hash, role, is_active, created_at) "
                    "VALUES (:id, :email, 'x', 'user', true, CURRENT_TIMESTAMP)"
                ),
                {"id": user, "email": f"{user}@example.com"},
            )
    for service, environment in CONFIGS:
        owner = OWNERS[service]
        ctx = WriteContext(
            vault=VAULT, actor=Actor(kind="user", id=owner, name=f"{owner}@example.com")
        )
        with unit_of_work(sessions) as s:
            commands.replace(s, service, environment, {"A": 1}, ctx)
    with unit_of_work(sessions) as s:  # a deleted config is listed for nobody
        commands.replace(s, "pay", "gone", {"A": 1}, ctx_of("u1"))
    with unit_of_work(sessions) as s:
        commands.delete(s, "pay", "gone", ctx_of("u1"))
    return sessions


def ctx_of(user: str) -> WriteContext:
    return WriteContext(vault=VAULT, actor=Actor(kind="user", id=user, name=f"{user}@example.com"))


@pytest.mark.parametrize("caller", CALLERS, ids=lambda c: f"{c.kind}-{c.role or c.service}")
def test_the_sql_filter_lists_exactly_what_the_rule_lets_the_caller_read(
    configs: sessionmaker[Session], caller: Caller
) -> None:
    with configs() as s:
        listed = {(c.service, c.environment) for c in queries.list_readable(s, caller)}
    allowed = {
        (service, environment)
        for service, environment in CONFIGS
        if can_read(caller, service, environment, OWNERS[service])
    }
    assert listed == allowed
