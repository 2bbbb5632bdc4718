"""The transparency log: the Merkle tree and its proofs against a plain reading of RFC 9162,
signed checkpoints, the offline verifier naming what an attacker with the database did, the
runner that stops on a rewritten log, and blame."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from configsync import logverify
from configsync.audit.log import LogSigner, sign_checkpoint
from configsync.db import make_session_factory, unit_of_work
from configsync.domain.events import CONFIG_CHANGED, ConfigChanged
from configsync.events import NewEvent, append_batch, format_instant, read_after, verify_chain
from configsync.events.store import event_hash
from configsync.settings import Settings, new_log_key
from configsync.tasks import sign_due_checkpoint
from projections import merkle
from projections.base import LogRewritten, catch_up
from projections.merkle import MerkleProjection
from projections.registry import ASYNCHRONOUS
from tests.conftest import Api, clean_env, cli

# --- RFC 9162 §2.1, read plainly: the definitions, recursive, as the RFC writes them ----------


def mth(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((n - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if b else [mth(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*subproof(m, leaves[:k], b), mth(leaves[k:])]
    return [*subproof(m - k, leaves[k:], False), mth(leaves[:k])]


def leaf_data(i: int) -> bytes:
    return hashlib.sha256(f"event {i}".encode()).digest()  # the leaves are 32-byte chain hashes


@given(st.integers(min_value=0, max_value=300))
@settings(max_examples=60, deadline=None)
def test_the_root_is_the_rfcs_merkle_tree_hash(n: int) -> None:
    leaves = [leaf_data(i) for i in range(n)]
    assert logverify.root_of([logverify.leaf_hash(x) for x in leaves]) == mth(leaves)


def _events(session: Session, count: int, *, stream: str = "svc/prod", start: int = 0) -> None:
    actor = {"actor": {"kind": "system", "id": "t", "name": "t"}}
    batch = []
    for version in range(start, start + count):
        changes = [{"op": "add" if version == 0 else "replace", "path": ["N"], "value": version}]
        payload = ConfigChanged(action="updated", changes=changes).to_data()
        batch.append(NewEvent(stream, version, payload, actor, type=CONFIG_CHANGED))
    append_batch(session, batch)


def _tree(sessions: sessionmaker[Session], count: int, batch_size: int = 7) -> list[bytes]:
    with unit_of_work(sessions) as session:
        _events(session, count)
    catch_up(sessions, MerkleProjection(), batch_size=batch_size)  # in several batches
    with sessions() as session:
        return [bytes.fromhex(e.hash) for e in read_after(session, 0, count)]


def test_stored_roots_and_proofs_agree_with_the_rfc_for_every_size_up_to_64(
    sessions: sessionmaker[Session],
) -> None:
    leaves = _tree(sessions, 64)
    with sessions() as session:
        for n in range(1, 65):
            root = merkle.root(session, n)
            assert root == mth(leaves[:n]), n
            for m in range(1, n + 1):
                proof = merkle.inclusion_proof(session, m, n)
                assert proof == path(m - 1, leaves[:n]), (m, n)
                logverify.verify_inclusion(
                    m - 1, n, logverify.leaf_hash(leaves[m - 1]), proof, root
                )
                consistency = merkle.consistency_proof(session, m, n)
                assert consistency == (subproof(m, leaves[:n], True) if m < n else []), (m, n)
                logverify.verify_consistency(m, n, mth(leaves[:m]), root, consistency)


def test_proofs_on_larger_trees_and_wrong_proofs_fail(sessions: sessionmaker[Session]) -> None:
    leaves = _tree(sessions, 1100, batch_size=250)
    with sessions() as session:
        for n, m in [(1024, 1), (1025, 1025), (1100, 513), (1099, 1024), (1100, 777)]:
            root = merkle.root(session, n)
            assert root == mth(leaves[:n])
            proof = merkle.inclusion_proof(session, m, n)
            assert proof == path(m - 1, leaves[:n])
            logverify.verify_inclusion(m - 1, n, logverify.leaf_hash(leaves[m - 1]), proof, root)
            with pytest.raises(logverify.VerificationError):
                logverify.verify_inclusion(m - 1, n, logverify.leaf_hash(b"x" * 32), proof, root)
            consistency = merkle.consistency_proof(session, m, n)
            logverify.verify_consistency(m, n, mth(leaves[:m]), root, consistency)
            with pytest.raises(logverify.VerificationError):
                logverify.verify_consistency(m, n, mth(leaves[1 : m + 1]), root, consistency)


# --- signed checkpoints -------------------------------------------------------------------------


def test_the_worker_looks_for_a_due_checkpoint_once_per_interval(
    sessions: sessionmaker[Session], engine: Engine, tmp_path: Path
) -> None:
    # The worker asks after every catch-up (tens of times a second under write load); until
    # the interval since the last checkpoint it found or signed has passed, the answer needs no
    # statement at all, and once it has, the tree is signed as before.
    settings = Settings(
        database_url=str(engine.url),
        log_signing_key=new_log_key(),
        checkpoint_log=str(tmp_path / "checkpoints.log"),
        checkpoint_interval_seconds=0.5,
    )
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    _tree(sessions, 3)
    assert sign_due_checkpoint(sessions, settings) == 3  # the first is due at once
    with unit_of_work(sessions) as session:
        _events(session, 2, start=3)
    catch_up(sessions, MerkleProjection())
    event.listen(engine, "before_cursor_execute", count)
    try:
        assert sign_due_checkpoint(sessions, settings) == 0  # the tree grew, but too soon
        assert statements == []
        time.sleep(0.6)
        assert sign_due_checkpoint(sessions, settings) == 5
        assert statements  # it looked, and signed
    finally:
        event.remove(engine, "before_cursor_execute", count)
    notes = Path(settings.checkpoint_log).read_text().count("\u2014 ")
    assert notes == 2

    # A process that has not signed yet learns the moment from the checkpoint it finds: it
    # looks once, then waits out the interval without asking again.
    other = make_session_factory(engine)
    with unit_of_work(sessions) as session:
        _events(session, 1, start=5)
    catch_up(sessions, MerkleProjection())
    statements.clear()
    event.listen(engine, "before_cursor_execute", count)
    try:
        assert sign_due_checkpoint(other, settings) == 0
        looked = len(statements)
        assert looked > 0
        assert sign_due_checkpoint(other, settings) == 0
        assert len(statements) == looked
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_checkpoints_verify_with_the_log_key_and_nothing_else(
    sessions: sessionmaker[Session],
) -> None:
    _tree(sessions, 10)
    signer = LogSigner("example.com/log", new_log_key())
    with unit_of_work(sessions) as session:
        signed = sign_checkpoint(session, signer)
    assert signed is not None and signed.tree_size == 10
    key = logverify.parse_verifier_key(signer.verifier_key())
    checkpoint = logverify.parse_checkpoint(signed.note, key)
    assert (checkpoint.origin, checkpoint.size) == ("example.com/log", 10)

    other = logverify.parse_verifier_key(LogSigner("example.com/log", new_log_key()).verifier_key())
    with pytest.raises(logverify.VerificationError, match=r"not signed by|does not verify"):
        logverify.parse_checkpoint(signed.note, other)
    body, _, signature = signed.note.partition("\n\n")
    lines = body.split("\n")
    edited = "\n".join([lines[0], lines[1], "AAAA" + lines[2][4:]]) + "\n\n" + signature
    with pytest.raises(logverify.VerificationError, match="does not verify"):
        logverify.parse_checkpoint(edited, key)
    elsewhere = LogSigner("elsewhere.example/log", new_log_key())
    with unit_of_work(sessions) as session:
        root = merkle.root(session, 10)
    foreign = elsewhere.sign(10, root)
    foreign_key = logverify.parse_verifier_key(elsewhere.verifier_key())
    with pytest.raises(logverify.VerificationError, match="for the log"):
        logverify.parse_checkpoint(foreign, foreign_key, "example.com/log")


# --- an attacker with the database, and the auditor's offline verifier ------------------------


def _export(engine: Engine, path: Path) -> Path:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM events ORDER BY position")).mappings().all()
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            event = {
                "position": row["position"],
                "event_id": row["event_id"],
                "stream": row["stream"],
                "version": row["version"],
                "type": row["type"],
                "data": json.loads(row["data"]),
                "metadata": json.loads(row["metadata"]),
                "recorded_at": format_instant(row["recorded_at"].astimezone(UTC)),
                "prev_hash": row["prev_hash"],
                "hash": row["hash"],
            }
            handle.write(json.dumps(event) + "\n")
    return path


def _rechain_from(engine: Engine, position: int, edit: Any) -> None:
    """Rewrite events from `position` on as a database superuser would: edit, recompute hashes."""
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE events DISABLE TRIGGER USER"))
        rows = conn.execute(text("SELECT * FROM events ORDER BY position")).mappings().all()
        prev = rows[position - 2]["hash"] if position > 1 else "0" * 64
        for row in rows[position - 1 :]:
            data = edit(json.loads(row["data"]))
            digest = event_hash(
                prev,
                position=row["position"],
                event_id=row["event_id"],
                stream=row["stream"],
                version=row["version"],
                type=row["type"],
                data=data,
                metadata=json.loads(row["metadata"]),
                recorded_at=row["recorded_at"].astimezone(UTC),
            )
            conn.execute(
                text("UPDATE events SET data = :d, prev_hash = :p, hash = :h WHERE position = :n"),
                {
                    "d": json.dumps(data, sort_keys=True, separators=(",", ":")),
                    "p": prev,
                    "h": digest,
                    "n": row["position"],
                },
            )
            prev = digest
        conn.execute(text("ALTER TABLE events ENABLE TRIGGER USER"))


@pytest.fixture
def held(pg: Engine, tmp_path: Path) -> dict[str, Any]:
    """A log of 10 events with checkpoints kept outside at sizes 4, 5 and 10."""
    from configsync.db import make_session_factory

    sessions = make_session_factory(pg)
    signer = LogSigner("example.com/log", new_log_key())
    notes = []
    for count, start in ((4, 0), (1, 4), (5, 5)):
        with unit_of_work(sessions) as session:
            _events(session, count, start=start)
        catch_up(sessions, MerkleProjection())
        with unit_of_work(sessions) as session:
            signed = sign_checkpoint(session, signer)
            assert signed is not None
            notes.append(signed.note)
    checkpoints = tmp_path / "checkpoints.txt"
    checkpoints.write_text("\n".join(notes))  # as the checkpoint file keeps them
    return {"key": signer.verifier_key(), "checkpoints": checkpoints, "sessions": sessions}


def _verify(held: dict[str, Any], engine: Engine, tmp_path: Path) -> Any:
    events = _export(engine, tmp_path / "events.jsonl")
    return cli(
        "log",
        "verify",
        "--key",
        held["key"],
        "--checkpoint",
        str(held["checkpoints"]),
        "--events",
        str(events),
        env=clean_env(),
    )


def test_an_honest_log_that_grew_passes(held: dict[str, Any], pg: Engine, tmp_path: Path) -> None:
    with unit_of_work(held["sessions"]) as session:
        _events(session, 3, start=10)
    result = _verify(held, pg, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ok: 13 events" in result.stdout


def test_a_deleted_tail_is_named_truncated(
    held: dict[str, Any], pg: Engine, tmp_path: Path
) -> None:
    with pg.begin() as conn:
        conn.execute(text("ALTER TABLE events DISABLE TRIGGER USER"))
        conn.execute(text("DELETE FROM events WHERE position > 8"))
        conn.execute(text("ALTER TABLE events ENABLE TRIGGER USER"))
    result = _verify(held, pg, tmp_path)
    assert result.returncode == 1 and "truncated" in result.stderr


def test_an_edit_rechained_after_it_is_named_rewritten_from_its_position(
    held: dict[str, Any], pg: Engine, tmp_path: Path
) -> None:
    def edit(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "reason": "nothing to see here"}

    _rechain_from(pg, 5, lambda d: d)  # recomputing honest hashes changes nothing
    assert _verify(held, pg, tmp_path).returncode == 0
    _rechain_from(pg, 5, edit)
    with held["sessions"]() as session:  # the chain itself verifies: only checkpoints catch it
        assert verify_chain(session).ok
    result = _verify(held, pg, tmp_path)
    assert result.returncode == 1 and "rewritten from position 5" in result.stderr


def test_an_edit_left_unchained_is_named_by_position(
    held: dict[str, Any], pg: Engine, tmp_path: Path
) -> None:
    with pg.begin() as conn:
        conn.execute(text("ALTER TABLE events DISABLE TRIGGER USER"))
        conn.execute(text("UPDATE events SET data = '{\"changes\":[]}' WHERE position = 7"))
        conn.execute(text("ALTER TABLE events ENABLE TRIGGER USER"))
    result = _verify(held, pg, tmp_path)
    assert result.returncode == 1 and "rewritten from position 7" in result.stderr


def test_a_different_log_of_the_same_size_is_named_forked(
    held: dict[str, Any], pg: Engine, tmp_path: Path
) -> None:
    _rechain_from(pg, 1, lambda d: {**d, "reason": "another history"})
    result = _verify(held, pg, tmp_path)
    assert result.returncode == 1 and "forked" in result.stderr


# --- inside the database: the runner and the audit trail ---------------------------------------


def test_the_runner_stops_on_a_truncated_tail_instead_of_skipping(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    _tree(sessions, 5)
    audit = next(p for p in ASYNCHRONOUS if p.name == "audit")
    catch_up(sessions, audit)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE events DISABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER events_no_delete"))
        conn.execute(text("DELETE FROM events WHERE position = 5"))
    with pytest.raises(LogRewritten, match="position 5"):
        catch_up(sessions, audit)
    with unit_of_work(sessions) as session:  # the position is reused by a new event
        _events(session, 1, stream="other/prod")
    with pytest.raises(LogRewritten, match="position 5, has changed"):
        catch_up(sessions, audit)
    with pytest.raises(LogRewritten):
        catch_up(sessions, MerkleProjection())


def test_audit_rows_are_append_only_and_verify_names_a_changed_one(any_api: Api) -> None:
    owner = any_api.person("owner@example.com")
    admin = any_api.person("admin@example.com", "admin")
    for i in range(3):
        any_api.put("/v1/configs/pay/prod", headers=owner, json={"data": {"A": i}})
    assert any_api.get("/v1/audit/verify", headers=admin).json()["ok"] is True
    for statement in ("UPDATE audit_log SET reason = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"), any_api.engine.begin() as conn:
            conn.execute(text(statement))
    with any_api.engine.begin() as conn:
        if any_api.engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
        conn.execute(
            text("UPDATE audit_log SET hash = repeat('0', 64) WHERE position = 2")
            if any_api.engine.dialect.name == "postgresql"
            else text("UPDATE audit_log SET hash = 'x' WHERE position = 2")
        )
    report = any_api.get("/v1/audit/verify", headers=admin).json()
    assert report == {"ok": False, "checked": 3, "first_bad_position": 2}


# --- the HTTP surface ------------------------------------------------------------------------


def test_key_checkpoint_and_proofs_over_http(sqlite_api: Api) -> None:
    owner = sqlite_api.person("owner@example.com")
    admin = sqlite_api.person("admin@example.com", "admin")
    auditor = sqlite_api.person("auditor@example.com", "auditor")
    for i in range(6):
        sqlite_api.put("/v1/configs/pay/prod", headers=owner, json={"data": {"A": i}})
    key = logverify.parse_verifier_key(sqlite_api.get("/v1/log/key").text)
    # The worker (in-process here) signed the first event's tree, then waits out the interval.
    first = logverify.parse_checkpoint(sqlite_api.get("/v1/log/checkpoint").text, key)
    assert first.size == 1
    signed = sqlite_api.post("/v1/log/checkpoint", headers=admin).json()
    assert signed["tree_size"] == 6
    note = sqlite_api.get("/v1/log/checkpoint").text
    checkpoint = logverify.parse_checkpoint(note, key)
    proof = sqlite_api.get("/v1/log/proof/inclusion?position=3&tree_size=6", headers=auditor).json()
    import base64

    logverify.verify_inclusion(
        2,
        6,
        base64.b64decode(proof["leaf_hash"]),
        [base64.b64decode(h) for h in proof["inclusion_path"]],
        checkpoint.root,
    )
    assert sqlite_api.get("/v1/log/proof/consistency?from=2&to=6", headers=owner).status_code == 403
    assert sqlite_api.post("/v1/log/checkpoint", headers=owner).status_code == 403


# --- blame ----------------------------------------------------------------------------------


def test_blame_names_the_version_that_last_changed_each_key(any_api: Api) -> None:
    owner = any_api.person("owner@example.com")
    auditor = any_api.person("auditor@example.com", "auditor")
    url = "/v1/configs/pay/prod"

    def put(data: dict[str, Any], reason: str) -> None:
        any_api.put(url, headers=owner, json={"data": data, "reason": reason})

    put({"A": 1, "B": {"x": 1, "y": 1}, "C": 1}, "v1")
    put({"A": 2, "B": {"x": 1, "y": 1}, "C": 1}, "v2 changes A")
    put({"A": 2, "B": {"x": 1, "y": 2}, "C": 1}, "v3 changes B.y")
    any_api.post(url + "/rollback", headers=owner, json={"to_version": 2, "reason": "undo"})
    any_api.put("/v1/configs/pay/dev", headers=owner, json={"data": {"C": 9}})
    any_api.post(
        "/v1/configs/pay/dev/promote",
        headers=owner,
        json={"to_environment": "prod", "keys": ["C"], "reason": "promote C"},
    )
    blame = any_api.get(url + "/blame", headers=auditor).json()
    by_key = {".".join(k["path"]): (k["version"], k["action"], k["reason"]) for k in blame["keys"]}
    assert by_key == {
        "A": (2, "updated", "v2 changes A"),
        "B.x": (1, "created", "v1"),
        "B.y": (4, "rolled_back", "undo"),
        "C": (5, "promoted", "promote C"),
    }
    history = any_api.get(url + "/history?key=B", headers=auditor).json()
    assert [i["version"] for i in history["items"]] == [4, 3, 1]
    assert any_api.get(url + "/blame", headers=any_api.person("x@example.com")).status_code == 404


def test_readiness_fails_while_the_log_under_the_projections_is_rewritten(pg_api: Api) -> None:
    owner = pg_api.person("owner@example.com")
    for i in range(3):
        pg_api.put("/v1/configs/pay/prod", headers=owner, json={"data": {"A": i}})
    assert pg_api.get("/health/ready").json()["checks"]["log"] == "ok"
    with pg_api.engine.begin() as conn:
        conn.execute(text("ALTER TABLE events DISABLE TRIGGER USER"))
        conn.execute(text("DELETE FROM events WHERE position = 3"))
        conn.execute(text("ALTER TABLE events ENABLE TRIGGER USER"))
    ready = pg_api.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["log"].startswith("rewritten: projection")
