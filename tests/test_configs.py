"""The config domain over the real store: writes, no-ops, deletes, reads of the past, the fold."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from configsync.auth.models import UserRow
from configsync.auth.service import service_owner
from configsync.configs import commands, queries
from configsync.configs.commands import WriteContext
from configsync.db import unit_of_work
from configsync.domain.actor import Actor
from configsync.domain.documents import Limits, documents_equal, fold
from configsync.errors import (
    Deleted,
    DocumentTooLarge,
    InvalidDocument,
    InvalidInput,
    InvalidName,
    NotFound,
    VersionConflict,
)
from configsync.events import read_stream, verify_chain
from configsync.secrets.vault import Vault
from projections import current
from tests.conftest import scalar
from tests.strategies import documents

VAULT = Vault.ephemeral()


@pytest.fixture(autouse=True)
def people(sessions: sessionmaker[Session]) -> None:
    with unit_of_work(sessions) as s:
        for user_id in ("u1", "u2"):
            s.add(
                UserRow(id=user_id, email=f"{user_id}@example.com", password_hash="x", role="user")
            )


CTX = WriteContext(
    vault=VAULT, actor=Actor(kind="user", id="u1", name="owner@example.com"), request_id="r1"
)


def write(sessions: sessionmaker[Session], op: Any, *args: Any, **kwargs: Any) -> Any:
    with unit_of_work(sessions) as s:
        return op(s, *args, **kwargs)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(docs=st.lists(documents, min_size=1, max_size=6))
def test_folding_stored_events_reproduces_every_distinct_document_written(
    sessions: sessionmaker[Session], docs: list[dict[str, Any]]
) -> None:
    name = f"svc-{uuid.uuid4().hex[:12]}"
    distinct: list[dict[str, Any]] = []
    for doc in docs:
        result = write(sessions, commands.replace, name, "prod", doc, CTX)
        if not distinct or not documents_equal(distinct[-1], doc):
            distinct.append(doc)
            assert result.changed and result.version == len(distinct)
        else:
            assert not result.changed and result.event is None

    with sessions() as s:
        events = read_stream(s, f"{name}/prod")
        assert len(events) == len(distinct)
        # What is stored has secret values sealed; opened, it is what was written.
        for n, expected in enumerate(distinct, start=1):
            assert documents_equal(VAULT.open(s, fold(events[:n]).document), expected)
            past = queries.get_version(s, name, "prod", n).document
            assert documents_equal(VAULT.open(s, past), expected)
        row = current.read(s, name, "prod")
        assert row is not None and row.version == len(distinct)
        assert documents_equal(VAULT.open(s, row.document), distinct[-1])


def test_a_write_that_changes_nothing_appends_nothing(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    first = write(sessions, commands.replace, "pay", "prod", {"A": 1}, CTX)
    again = write(sessions, commands.replace, "pay", "prod", {"A": 1}, CTX)
    patched = write(sessions, commands.patch, "pay", "prod", {"A": 1}, CTX)
    assert first.created and first.changed and first.version == 1
    assert (again.changed, again.version, patched.changed) == (False, 1, False)
    assert scalar(engine, "SELECT count(*) FROM events") == 1
    # 1 and 1.0 are different JSON values: that is a change
    assert write(sessions, commands.replace, "pay", "prod", {"A": 1.0}, CTX).version == 2


def test_patch_merges_and_delete_then_recreate_keeps_counting(
    sessions: sessionmaker[Session],
) -> None:
    write(sessions, commands.replace, "pay", "prod", {"A": 1, "B": {"x": 1, "y": 2}}, CTX)
    patched = write(
        sessions, commands.patch, "pay", "prod", {"B": {"y": None, "z": 3}, "C": [1]}, CTX
    )
    assert patched.document == {"A": 1, "B": {"x": 1, "z": 3}, "C": [1]}

    deleted = write(sessions, commands.delete, "pay", "prod", CTX, reason="retired")
    assert deleted.version == 3 and deleted.deleted
    with sessions() as s:
        with pytest.raises(Deleted) as caught:
            queries.get(s, "pay", "prod")
        assert caught.value.deleted_at_version == 3
        assert queries.get_version(s, "pay", "prod", 2).document == patched.document
    with pytest.raises(Deleted):
        write(sessions, commands.delete, "pay", "prod", CTX)

    recreated = write(sessions, commands.replace, "pay", "prod", {"A": 2}, CTX)
    assert recreated.created and recreated.version == 4
    with sessions() as s:
        events = read_stream(s, "pay/prod")
        assert [e.data["deleted"] for e in events] == [False, False, True, False]
        assert events[2].data["reason"] == "retired"
        assert events[0].metadata == {
            "actor": {"kind": "user", "id": "u1", "name": "owner@example.com"},
            "request_id": "r1",
            "client": None,
        }
        assert queries.get(s, "pay", "prod").document == {"A": 2}
        assert verify_chain(s).ok


def test_expected_version_guards_every_kind_of_write(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    with pytest.raises(VersionConflict):
        write(sessions, commands.replace, "pay", "prod", {"A": 1}, CTX, expected_version=1)
    write(sessions, commands.replace, "pay", "prod", {"A": 1}, CTX, expected_version=0)
    with pytest.raises(VersionConflict):
        write(sessions, commands.replace, "pay", "prod", {"A": 2}, CTX, expected_version=0)
    with pytest.raises(VersionConflict):
        write(sessions, commands.patch, "pay", "prod", {"A": 2}, CTX, expected_version=2)
    with pytest.raises(VersionConflict):
        write(sessions, commands.delete, "pay", "prod", CTX, expected_version=5)
    assert scalar(engine, "SELECT count(*) FROM events") == 1
    assert (
        write(sessions, commands.patch, "pay", "prod", {"A": 2}, CTX, expected_version=1).version
        == 2
    )


@pytest.mark.parametrize(
    ("svc", "env", "doc", "error"),
    [
        ("Bad Name", "prod", {"A": 1}, InvalidName),
        ("pay", "prod/x", {"A": 1}, InvalidName),
        ("pay", "prod", [1, 2], InvalidDocument),
        ("pay", "prod", "text", InvalidDocument),
        ("pay", "prod", {"A": "x" * 5000}, DocumentTooLarge),
        ("pay", "prod", {"a": {"b": {"c": {"d": {"e": 1}}}}}, InvalidDocument),
        ("pay", "prod", {f"K{i}": i for i in range(50)}, InvalidDocument),
    ],
)
def test_bad_input_raises_a_clear_error_and_appends_nothing(
    sessions: sessionmaker[Session], engine: Engine, svc: str, env: str, doc: Any, error: type
) -> None:
    ctx = WriteContext(
        vault=VAULT, actor=CTX.actor, limits=Limits(max_bytes=4096, max_keys=20, max_depth=4)
    )
    with pytest.raises(error):
        write(sessions, commands.replace, svc, env, doc, ctx)
    assert scalar(engine, "SELECT count(*) FROM events") == 0
    assert scalar(engine, "SELECT count(*) FROM config_current") == 0


def test_a_patch_that_would_break_a_limit_appends_nothing(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    ctx = WriteContext(
        vault=VAULT, actor=CTX.actor, limits=Limits(max_bytes=4096, max_keys=3, max_depth=4)
    )
    write(sessions, commands.replace, "pay", "prod", {"A": 1, "B": 2}, ctx)
    with pytest.raises(InvalidDocument, match="limit is 3"):
        write(sessions, commands.patch, "pay", "prod", {"C": 3, "D": 4}, ctx)
    with pytest.raises(InvalidInput, match="reason"):
        write(sessions, commands.patch, "pay", "prod", {"C": 3}, ctx, reason="x" * 1001)
    assert scalar(engine, "SELECT count(*) FROM events") == 1


def test_reads_of_the_past_by_version_and_instant(sessions: sessionmaker[Session]) -> None:
    v1 = write(sessions, commands.replace, "pay", "prod", {"A": 1}, CTX)
    v2 = write(sessions, commands.replace, "pay", "prod", {"A": 2}, CTX)
    with sessions() as s:
        assert queries.get_as_of(s, "pay", "prod", v1.updated_at).document == {"A": 1}
        assert queries.get_as_of(s, "pay", "prod", v2.updated_at).version == 2
        with pytest.raises(NotFound):
            queries.get_version(s, "pay", "prod", 3)
        with pytest.raises(NotFound):
            queries.get(s, "nope", "prod")


def test_first_write_records_the_owner(sessions: sessionmaker[Session]) -> None:
    write(sessions, commands.replace, "pay", "prod", {"A": 1}, CTX)
    other = WriteContext(vault=VAULT, actor=Actor(kind="user", id="u2", name="other@example.com"))
    write(sessions, commands.replace, "pay", "staging", {"A": 1}, other)
    with sessions() as s:
        assert service_owner(s, "pay")[1] == "u1"
