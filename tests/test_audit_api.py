"""The audit API, the audit file's resumption, and embedded mode (projections in-process)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import sessionmaker

from projections.audit import AuditFile
from tests.conftest import Api


def _write_some(api: Api, headers: dict[str, str], count: int) -> None:
    for i in range(count):
        service = "pay" if i % 2 == 0 else "web"
        api.put(
            f"/v1/configs/{service}/prod",
            headers=headers,
            json={"data": {"N": i}, "reason": f"r{i}"},
        )


def test_embedded_mode_audits_each_write_right_away(any_api: Api) -> None:
    owner = any_api.person("owner@example.com")
    for i in range(1, 4):
        any_api.put("/v1/configs/pay/prod", headers=owner, json={"data": {"N": i}})
        with any_api.engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM audit_log")) == i
    audit_log = Path(any_api.client.app.state.settings.audit_log)
    assert [json.loads(line)["version"] for line in audit_log.read_text().splitlines()] == [1, 2, 3]


def test_auditors_and_admins_read_the_audit_log_and_others_may_not(pg_api: Api) -> None:
    owner = pg_api.person("owner@example.com")
    auditor = pg_api.person("auditor@example.com", "auditor")
    admin = pg_api.person("admin@example.com", "admin")
    _write_some(pg_api, owner, 5)
    for headers in (auditor, admin):
        page = pg_api.get("/v1/audit", headers=headers).json()
        assert [i["position"] for i in page["items"]] == [1, 2, 3, 4, 5]
        assert pg_api.get("/v1/events", headers=headers).status_code == 200
        assert pg_api.get("/v1/audit/verify", headers=headers).json()["ok"] is True
    item = page["items"][0]
    assert item["actor"]["name"] == "owner@example.com" and item["reason"] == "r0"
    assert item["action"] == "created" and item["summary"] == "+1 ~0 -0: N"
    assert set(item) >= {
        "event_id",
        "recorded_at",
        "service",
        "environment",
        "version",
        "changes",
        "hash",
    }
    key = {"X-API-Key": pg_api.key(owner, "pay")}
    for path in ("/v1/audit", "/v1/events", "/v1/audit/verify", "/v1/audit?format=csv"):
        assert pg_api.get(path, headers=owner).status_code == 403, path
        assert pg_api.get(path, headers=key).status_code == 403, path
        assert pg_api.get(path).status_code == 401, path
    assert pg_api.get("/v1/projections", headers=auditor).status_code == 403


def test_filters_and_cursor_paging(pg_api: Api) -> None:
    owner = pg_api.person("owner@example.com")
    auditor = pg_api.person("auditor@example.com", "auditor")
    _write_some(pg_api, owner, 9)
    pay = pg_api.get("/v1/audit?service=pay", headers=auditor).json()["items"]
    assert {i["service"] for i in pay} == {"pay"} and len(pay) == 5
    updated = pg_api.get("/v1/audit?action=updated", headers=auditor).json()["items"]
    assert len(updated) == 7
    by_actor = pg_api.get("/v1/audit?actor=OWNER@example.com", headers=auditor).json()["items"]
    assert len(by_actor) == 9
    assert pg_api.get("/v1/audit?since=2999-01-01T00:00:00Z", headers=auditor).json()["items"] == []
    assert pg_api.get("/v1/audit?action=exploded", headers=auditor).status_code == 422
    assert pg_api.get("/v1/audit?since=2026-01-01T00:00:00", headers=auditor).status_code == 422
    assert pg_api.get("/v1/audit?limit=501", headers=auditor).status_code == 422
    seen, cursor = [], None
    while True:
        query = f"/v1/audit?limit=4&cursor={cursor}" if cursor is not None else "/v1/audit?limit=4"
        page = pg_api.get(query, headers=auditor).json()
        seen += [i["position"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(range(1, 10))
    feed = pg_api.get("/v1/events?after=3&limit=2", headers=auditor).json()
    assert [e["position"] for e in feed["items"]] == [4, 5] and feed["next_after"] == 5
    assert feed["items"][0]["data"]["changes"] and feed["items"][0]["hash"]


def test_exports_parse_as_jsonl_and_csv(pg_api: Api) -> None:
    owner = pg_api.person("owner@example.com")
    auditor = pg_api.person("auditor@example.com", "auditor")
    pg_api.put(
        "/v1/configs/pay/prod",
        headers=owner,
        json={"data": {"Q": 'a "quoted", comma\nnewline'}, "reason": 'tricky, "csv"'},
    )
    _write_some(pg_api, owner, 4)
    jsonl = pg_api.get("/v1/audit?format=jsonl", headers=auditor)
    assert jsonl.headers["content-type"].startswith("application/x-ndjson")
    items = [json.loads(line) for line in jsonl.text.splitlines()]
    assert [i["position"] for i in items] == [1, 2, 3, 4, 5]
    exported = pg_api.get("/v1/audit?format=csv&service=pay", headers=auditor)
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [int(r["position"]) for r in rows] == [1, 2, 4]
    assert rows[0]["reason"] == 'tricky, "csv"'
    assert json.loads(rows[0]["changes"])[0]["value"] == 'a "quoted", comma\nnewline'


def test_verify_names_a_row_altered_behind_the_stores_back(pg_api: Api) -> None:
    owner = pg_api.person("owner@example.com")
    auditor = pg_api.person("auditor@example.com", "auditor")
    _write_some(pg_api, owner, 30)
    assert pg_api.get("/v1/audit/verify", headers=auditor).json() == {
        "ok": True,
        "checked": 30,
        "first_bad_position": None,
    }
    with pg_api.engine.begin() as conn:
        conn.execute(text("ALTER TABLE events DISABLE TRIGGER events_no_update_or_delete"))
        conn.execute(
            text("UPDATE events SET data = replace(data, 'r17', 'rX') WHERE position = 18")
        )
        conn.execute(text("ALTER TABLE events ENABLE TRIGGER events_no_update_or_delete"))
    assert pg_api.get("/v1/audit/verify", headers=auditor).json() == {
        "ok": False,
        "checked": 17,
        "first_bad_position": 18,
    }


def test_the_audit_file_resumes_after_a_torn_line_without_gap_or_duplicate(
    pg_api: Api, pg: Engine, tmp_path: Path
) -> None:
    owner = pg_api.person("owner@example.com")
    _write_some(pg_api, owner, 6)
    path = tmp_path / "audit.log"
    factory = sessionmaker(bind=pg)
    with factory() as session:
        assert AuditFile(path).catch_up(session, batch_size=4) == 6
        assert AuditFile(path).catch_up(session) == 0  # nothing new: nothing written
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:4]) + lines[4][:25])  # a crash mid-line 5
    with factory() as session:
        assert AuditFile(path).catch_up(session) == 2
    positions = [json.loads(line)["position"] for line in path.read_text().splitlines()]
    assert positions == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("broken", [b"", b'{"posi'])
def test_an_empty_or_wholly_torn_file_starts_from_the_beginning(
    pg_api: Api, pg: Engine, tmp_path: Path, broken: bytes
) -> None:
    _write_some(pg_api, pg_api.person("owner@example.com"), 2)
    path = tmp_path / "audit.log"
    path.write_bytes(broken)
    with sessionmaker(bind=pg)() as session:
        assert AuditFile(path).catch_up(session) == 2
    assert [json.loads(line)["position"] for line in path.read_text().splitlines()] == [1, 2]
