"""Anything a client can send gets a 4xx with a JSON detail, and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from tests.conftest import Api, free_port, make_api

URL = "/v1/configs/pay/prod"


@pytest.fixture
def owner(pg_api: Api) -> dict[str, str]:
    headers = pg_api.person("owner@example.com")
    assert pg_api.put(URL, headers=headers, json={"data": {"A": 1}}).status_code == 201
    return headers


def _unchanged(api: Api, headers: dict[str, str]) -> None:
    assert api.events() == 1
    got = api.get(URL, headers=headers).json()
    assert got["version"] == 1 and got["data"] == {"A": 1}


def _deep(levels: int) -> bytes:
    return b'{"data": ' + b'{"a": ' * levels + b"1" + b"}" * levels + b"}"


BAD_BODIES: list[tuple[str, bytes | Any, int]] = [
    ("oversize document", {"data": {"A": "x" * (300 * 1024)}}, 413),
    ("oversize body, no parsing", b'{"data": {"A": "' + b"x" * (400 * 1024) + b'"}}', 413),
    ("array document", {"data": [1, 2, 3]}, 422),
    ("string document", {"data": "text"}, 422),
    ("null document", {"data": None}, 422),
    ("10,000 levels deep", _deep(10_000), 422),
    ("21 levels deep", _deep(21), 422),
    ("too many keys", {"data": {f"K{i}": i for i in range(2001)}}, 422),
    ("unknown field", {"data": {}, "version": 7}, 422),
    ("role smuggled in", {"data": {}, "role": "admin"}, 422),
    ("no data", {"reason": "x"}, 422),
    ("malformed JSON", b'{"data": {', 422),
    ("not UTF-8", b'{"data": {"A": "\xff\xfe"}}', 400),
    ("NaN", b'{"data": {"A": NaN}}', 422),
    ("NUL in a string", {"data": {"A": "a\u0000b"}}, 422),
    ("reason too long", {"data": {"A": 2}, "reason": "r" * 1001}, 422),
    ("negative expected_version", {"data": {"A": 2}, "expected_version": -1}, 422),
    ("empty body", b"", 422),
]


@pytest.mark.parametrize(("method"), ["PUT", "PATCH"])
@pytest.mark.parametrize(("case", "body", "status"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_bodies_are_refused_and_change_nothing(
    pg_api: Api, owner: dict[str, str], method: str, case: str, body: Any, status: int
) -> None:
    if isinstance(body, bytes):
        response = pg_api.request(
            method, URL, headers={**owner, "Content-Type": "application/json"}, content=body
        )
    else:
        response = pg_api.request(method, URL, headers=owner, json=body)
    assert response.status_code == status, response.text[:300]
    assert "detail" in response.json()
    _unchanged(pg_api, owner)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/configs/Pay/prod",
        "/v1/configs/pay/PROD",
        "/v1/configs/-pay/prod",
        "/v1/configs/" + "a" * 64 + "/prod",
        "/v1/configs/pay/pr%20od",
        "/v1/configs/p%C3%A9/prod",
    ],
)
def test_bad_names_are_422_for_reads_and_writes(
    pg_api: Api, owner: dict[str, str], path: str
) -> None:
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        body = {"data": {"A": 1}} if method in ("PUT", "PATCH") else None
        response = pg_api.request(method, path, headers=owner, json=body)
        assert response.status_code == 422, (method, path, response.text)
        assert "name" in str(response.json()["detail"])
    _unchanged(pg_api, owner)


def test_bad_query_values_and_headers_are_4xx(pg_api: Api, owner: dict[str, str]) -> None:
    for query in (
        "?version=abc",
        "?version=-1",
        "?as_of=yesterday",
        "?as_of=2026-01-01T00:00:00",
        "?format=toml",
    ):
        response = pg_api.get(URL + query, headers=owner)
        assert response.status_code == 422, (query, response.text)
    assert pg_api.get(URL, headers={**owner, "If-None-Match": "*x"}).status_code == 422
    assert (
        pg_api.put(URL, headers={**owner, "If-Match": "W/abc"}, json={"data": {}}).status_code
        == 422
    )
    assert (
        pg_api.post(
            "/v1/api-keys",
            headers=owner,
            json={"name": "k", "service": "pay", "permission": "admin"},
        ).status_code
        == 422
    )
    assert (
        pg_api.post(
            "/v1/api-keys",
            headers=owner,
            json={"name": "k", "service": "pay", "permission": "read", "expires_in_days": 0},
        ).status_code
        == 422
    )
    _unchanged(pg_api, owner)


def test_health_ready_answers_503_when_the_database_is_unreachable(pg: Engine) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    api = next(make_api(url, pg, wait_for_feed=False))
    live = api.get("/health/live")
    assert live.status_code == 200
    ready = api.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"].startswith("unavailable")
    # and a request that needs the database is a 503 too, not a 500
    response = api.get(URL, headers={"X-API-Key": "cs_" + "x" * 43})
    assert response.status_code == 503 and "detail" in response.json()


def test_health_ready_is_ok_with_a_database(pg_api: Api) -> None:
    ready = pg_api.get("/health/ready")
    checks = {"database": "ok", "log": "ok", "audit": "ok"}
    assert ready.status_code == 200 and ready.json()["checks"] == checks
