"""Delivery to services: the bare-document JSON rendering and read receipts."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine

from configsync.configs.rendering import RAW_MEDIA_TYPE
from tests.conftest import Api, make_api, scalar

URL = "/v1/configs/pay/prod"
DOC = {"API_URL": "https://api.example.com", "TIMEOUT": 30, "nested": {"a": [1, 2]}}


def _key(api: Api, owner: dict[str, str], name: str, **extra: Any) -> tuple[str, dict[str, str]]:
    body = {"name": name, "service": "pay", "permission": "read", **extra}
    made = api.post("/v1/api-keys", headers=owner, json=body)
    assert made.status_code == 201, made.text
    return made.json()["id"], {"X-API-Key": made.json()["key"]}


def test_format_raw_is_the_document_alone(any_api: Api) -> None:
    api = any_api
    owner = api.person("owner@example.com")
    api.put(URL, headers=owner, json={"data": {**DOC, "DB_PASSWORD": "pw-raw-1"}})
    api.put(URL, headers=owner, json={"data": {**DOC, "DB_PASSWORD": "pw-raw-2"}})
    _, key = _key(api, owner, "reader")
    for _ in range(3):  # the database, then (PostgreSQL) the cached fast path
        raw = api.get(URL, headers=key, params={"format": "raw"})
        assert raw.status_code == 200
        assert raw.headers["content-type"] == RAW_MEDIA_TYPE
        assert orjson.loads(raw.content) == {**DOC, "DB_PASSWORD": "pw-raw-2"}
        assert raw.headers["etag"] == '"2"'
    assert api.get(URL, headers=key).json()["data"] == orjson.loads(raw.content)  # the envelope's
    old = api.get(URL, headers=key, params={"format": "raw", "version": 1})
    assert orjson.loads(old.content)["DB_PASSWORD"] == "pw-raw-1"
    auditor = api.person("auditor@example.com", role="auditor")
    masked = orjson.loads(api.get(URL, headers=auditor, params={"format": "raw"}).content)
    assert masked["DB_PASSWORD"]["masked"] is True and masked["TIMEOUT"] == 30
    bad = api.get(URL, headers=key, params={"format": "xml"})
    assert bad.status_code == 422 and "format" in bad.text


def test_read_receipts_show_which_keys_are_behind(pg: Engine, pg_url: str) -> None:
    first, second = make_api(pg_url, pg), make_api(pg_url, pg)
    a, b = next(first), next(second)
    try:
        owner = a.person("owner@example.com")
        assert a.put(URL, headers=owner, json={"data": {"A": 1}}).status_code == 201
        assert a.put("/v1/configs/mail/prod", headers=owner, json={"data": {"A": 1}}).status_code
        fresh_id, fresh = _key(a, owner, "fresh", environment="prod")
        stale_id, stale = _key(a, owner, "stale")
        idle_id, _ = _key(a, owner, "idle")
        gone_id, gone = _key(a, owner, "revoked")
        other = a.post(
            "/v1/api-keys",
            headers=owner,
            json={"name": "mail", "service": "mail", "permission": "read"},
        ).json()
        for _ in range(3):
            assert a.get(URL, headers=stale).status_code == 200
        assert a.get(URL, headers=gone).status_code == 200
        assert a.delete(f"/v1/api-keys/{gone_id}", headers=owner).status_code == 204
        assert a.put(URL, headers=owner, json={"data": {"A": 2}}).status_code == 200
        assert a.get(URL, headers=fresh).status_code == 200
        # A 304 is a read of the version the key has: it is not behind.
        assert a.get(URL, headers={**fresh, "If-None-Match": '"2"'}).status_code == 304

        listed = a.get(URL + "/clients", headers=owner)
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert body["version"] == 2
        by_name = {c["name"]: c for c in body["clients"]}
        assert set(by_name) == {"fresh", "stale", "idle"}  # live keys of this config only
        assert (by_name["fresh"]["version"], by_name["fresh"]["behind"]) == (2, False)
        assert (by_name["stale"]["version"], by_name["stale"]["behind"]) == (1, True)
        assert by_name["idle"]["version"] is None and by_name["idle"]["behind"] is True
        assert by_name["fresh"]["key_id"] == fresh_id and by_name["stale"]["key_id"] == stale_id
        assert by_name["idle"]["key_id"] == idle_id and other["id"] not in listed.text
        assert by_name["fresh"]["read_at"] >= by_name["stale"]["read_at"]

        # Written in the background: another API process lists the same once they are.
        a.app.state.runtime.reader.receipts.flush()
        assert scalar(pg, "SELECT count(*) FROM read_receipts WHERE key_id = :k", k=fresh_id) == 1
        assert b.get(URL + "/clients", headers=owner).json() == body

        auditor = a.person("auditor@example.com", role="auditor")
        stranger = a.person("stranger@example.com")
        assert a.get(URL + "/clients", headers=auditor).status_code == 200
        assert a.get(URL + "/clients", headers=stranger).status_code == 404
        assert a.get(URL + "/clients", headers=fresh).status_code == 403
    finally:
        first.close()
        second.close()


def test_receipts_are_written_at_shutdown_and_never_move_backwards(pg: Engine, pg_url: str) -> None:
    generator = make_api(pg_url, pg)
    api = next(generator)
    owner = api.person("owner@example.com")
    api.put(URL, headers=owner, json={"data": {"A": 1}})
    api.put(URL, headers=owner, json={"data": {"A": 2}})
    key_id, key = _key(api, owner, "reader")
    assert api.get(URL, headers=key).status_code == 200
    receipts = api.app.state.runtime.reader.receipts
    generator.close()  # the lifespan's end writes what is noted
    row = "SELECT version FROM read_receipts WHERE key_id = :k"
    assert scalar(pg, row, k=key_id) == 2
    # A receipt noted earlier but written later (another process) does not overwrite it.
    receipts.note((key_id, "pay", "prod"), (1, 0.0))
    receipts.flush()
    assert scalar(pg, row, k=key_id) == 2
