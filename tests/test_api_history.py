"""History, diffs, reads of the past, rollback, compare and promote, over HTTP on PostgreSQL."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configsync.domain.documents import apply_changes, copy_document, documents_equal
from tests.conftest import Api
from tests.strategies import documents

URL = "/v1/configs/pay/prod"
SLOW = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def owner(pg_api: Api) -> dict[str, str]:
    return pg_api.person("owner@example.com")


@pytest.fixture
def auditor(pg_api: Api) -> dict[str, str]:
    return pg_api.person("auditor@example.com", role="auditor")


def _apply_shown(document: dict[str, Any], shown: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply changes in the form the diff endpoints show them (op, path, old, new)."""
    stored = [
        {"op": c["op"], "path": c["path"], **({"value": c["new"]} if "new" in c else {})}
        for c in shown
    ]
    return apply_changes(copy_document(document), stored)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("write"), documents),
        st.tuples(st.just("rollback"), st.integers(min_value=1, max_value=8)),
        st.tuples(st.just("delete"), st.none()),
    ),
    min_size=1,
    max_size=8,
)


@SLOW
@given(ops=operations)
def test_every_version_reads_back_and_rollback_adds_exactly_one(
    pg_api: Api, owner: dict[str, str], ops: list[tuple[str, Any]]
) -> None:
    url = f"/v1/configs/svc-{uuid.uuid4().hex[:10]}/prod"
    versions: list[dict[str, Any] | None] = []  # the document each version left; None = deleted

    def live() -> dict[str, Any] | None:
        return versions[-1] if versions else None

    for op, arg in ops:
        if op == "write":
            response = pg_api.put(url, headers=owner, json={"data": arg})
            assert response.status_code in (200, 201), response.text
            if live() is None or not documents_equal(live(), arg):
                versions.append(arg)
            assert response.json()["version"] == len(versions)
        elif op == "delete":
            response = pg_api.delete(url, headers=owner)
            if live() is None:
                assert response.status_code == 404
            else:
                assert response.status_code == 200
                versions.append(None)
        else:
            target = arg
            response = pg_api.post(url + "/rollback", headers=owner, json={"to_version": target})
            if target > len(versions):
                assert response.status_code == 404
            elif versions[target - 1] is None:
                assert response.status_code == 422
            elif live() is not None and documents_equal(live(), versions[target - 1]):
                assert response.status_code == 200 and response.json()["changed"] is False
            else:
                assert response.status_code == 200, response.text
                assert response.json()["changed"] is True
                versions.append(versions[target - 1])
                assert response.json()["version"] == len(versions)  # exactly one more
                current = pg_api.get(url, headers=owner).json()
                assert documents_equal(current["data"], versions[target - 1])

    for n, expected in enumerate(versions, start=1):
        response = pg_api.get(f"{url}?version={n}", headers=owner)
        if expected is None:
            assert response.status_code == 404 and response.json()["deleted_at_version"] == n
        else:
            assert response.status_code == 200 and documents_equal(
                response.json()["data"], expected
            )
    if versions:
        history = pg_api.get(url + "/history?limit=500", headers=owner).json()
        assert [i["version"] for i in history["items"]] == list(range(len(versions), 0, -1))


@SLOW
@given(a=documents, b=documents)
def test_the_diff_endpoint_turns_a_into_b(
    pg_api: Api, owner: dict[str, str], auditor: dict[str, str], a: Any, b: Any
) -> None:
    url = f"/v1/configs/svc-{uuid.uuid4().hex[:10]}/prod"
    assert pg_api.put(url, headers=owner, json={"data": a}).status_code == 201
    assert pg_api.put(url, headers=owner, json={"data": b}).status_code == 200
    version = pg_api.get(url, headers=owner).json()["version"]
    # In plain text (the owner reveals the secrets among them): the diff turns a into b.
    diff = pg_api.get(f"{url}/diff?from=1&to={version}&reveal=true", headers=owner).json()
    assert documents_equal(_apply_shown(a, diff["changes"]), b)
    # Masked (what every reader of history gets): it turns the masked a into the masked b.
    masked = pg_api.get(f"{url}/diff?from=1&to={version}", headers=owner).json()
    shown = [pg_api.get(f"{url}?version={v}", headers=auditor).json()["data"] for v in (1, version)]
    assert documents_equal(_apply_shown(shown[0], masked["changes"]), shown[1])
    same = pg_api.get(f"{url}/diff?from={version}", headers=owner).json()
    assert same["changes"] == [] and same["stats"] == {"added": 0, "removed": 0, "changed": 0}


def test_history_items_say_who_what_and_why(pg_api: Api, owner: dict[str, str]) -> None:
    pg_api.put(
        URL, headers=owner, json={"data": {"API_URL": "a", "TIMEOUT": 1}, "reason": "launch"}
    )
    pg_api.patch(URL, headers=owner, json={"data": {"API_URL": "b", "RETRIES": 3, "TIMEOUT": None}})
    pg_api.post(URL + "/rollback", headers=owner, json={"to_version": 1, "reason": "bad deploy"})
    pg_api.request("DELETE", URL, headers=owner, json={"reason": "retired"})
    pg_api.post(URL + "/rollback", headers=owner, json={"to_version": 2})
    page = pg_api.get(URL + "/history", headers=owner).json()
    items = page["items"]
    assert page["next_before_version"] is None
    assert [i["action"] for i in items] == [
        "rolled_back",
        "deleted",
        "rolled_back",
        "updated",
        "created",
    ]
    assert items[-1]["reason"] == "launch" and items[-1]["summary"] == "+2 ~0 -0: API_URL, TIMEOUT"
    assert items[-2]["summary"] == "+1 ~1 -1: API_URL, RETRIES, TIMEOUT"
    assert items[2]["rollback_of"] == 1 and items[2]["reason"] == "bad deploy"
    assert items[1]["reason"] == "retired"
    assert items[0]["rollback_of"] == 2
    assert pg_api.get(URL, headers=owner).json()["data"] == {"API_URL": "b", "RETRIES": 3}
    assert all(i["actor"]["name"] == "owner@example.com" for i in items)
    positions = [i["position"] for i in items]
    assert positions == sorted(positions, reverse=True)
    assert items[0]["recorded_at"].endswith("Z")


def test_paging_walks_every_version_once(pg_api: Api, owner: dict[str, str]) -> None:
    for i in range(23):
        pg_api.put(URL, headers=owner, json={"data": {"N": i}})
    seen: list[int] = []
    before = None
    while True:
        query = f"?limit=5&before_version={before}" if before else "?limit=5"
        page = pg_api.get(URL + "/history" + query, headers=owner).json()
        seen += [i["version"] for i in page["items"]]
        before = page["next_before_version"]
        if before is None:
            break
    assert seen == list(range(23, 0, -1))
    assert pg_api.get(URL + "/history?limit=501", headers=owner).status_code == 422
    assert pg_api.get(URL + "/history?limit=0", headers=owner).status_code == 422
    assert len(pg_api.get(URL + "/history?limit=500", headers=owner).json()["items"]) == 23


def test_as_of_between_two_writes_returns_the_earlier(pg_api: Api, owner: dict[str, str]) -> None:
    first = pg_api.put(URL, headers=owner, json={"data": {"A": 1}}).json()
    time.sleep(0.05)
    second = pg_api.put(URL, headers=owner, json={"data": {"A": 2}}).json()
    assert first["updated_at"] < second["updated_at"]
    between = first["updated_at"].replace("Z", "")
    as_of = pg_api.get(URL, headers=owner, params={"as_of": between + "+00:00"})
    assert (
        as_of.status_code == 200
        and as_of.json()["data"] == {"A": 1}
        and as_of.json()["version"] == 1
    )
    later = pg_api.get(URL, headers=owner, params={"as_of": "2999-01-01T00:00:00Z"})
    assert later.json()["version"] == 2
    before = pg_api.get(URL, headers=owner, params={"as_of": "2000-01-01T00:00:00Z"})
    assert before.status_code == 404


def test_rollback_edge_cases(pg_api: Api, owner: dict[str, str]) -> None:
    pg_api.put(URL, headers=owner, json={"data": {"A": 1}})
    pg_api.put(URL, headers=owner, json={"data": {"A": 2}})
    same = pg_api.post(URL + "/rollback", headers=owner, json={"to_version": 2})
    assert (
        same.status_code == 200
        and same.json()["changed"] is False
        and "nothing appended" in same.json()["message"]
    )
    assert pg_api.events() == 2
    stale = pg_api.post(
        URL + "/rollback", headers=owner, json={"to_version": 1, "expected_version": 1}
    )
    assert stale.status_code == 412 and pg_api.events() == 2
    assert pg_api.post(URL + "/rollback", headers=owner, json={"to_version": 9}).status_code == 404
    assert pg_api.post(URL + "/rollback", headers=owner, json={"to_version": 0}).status_code == 422
    assert (
        pg_api.post(URL + "/rollback", headers=owner, json={"to_version": 1, "x": 1}).status_code
        == 422
    )
    assert (
        pg_api.post(
            URL + "/rollback", headers=owner, json={"to_version": 1, "reason": "r" * 1001}
        ).status_code
        == 422
    )
    pg_api.delete(URL, headers=owner)
    assert pg_api.post(URL + "/rollback", headers=owner, json={"to_version": 3}).status_code == 422
    revived = pg_api.post(URL + "/rollback", headers=owner, json={"to_version": 1})
    assert revived.status_code == 200 and revived.json()["version"] == 4
    assert pg_api.get(URL, headers=owner).json()["data"] == {"A": 1}


@pytest.mark.parametrize(
    ("who", "status"),
    [
        ("owner", 200),
        ("admin", 200),
        ("other user", 404),
        ("auditor", 403),
        ("read key", 403),
        ("write key", 403),
    ],
)
def test_rollback_permissions(pg_api: Api, owner: dict[str, str], who: str, status: int) -> None:
    pg_api.put(URL, headers=owner, json={"data": {"A": 1}})
    pg_api.put(URL, headers=owner, json={"data": {"A": 2}})
    callers = {
        "owner": owner,
        "admin": pg_api.person("admin@example.com", "admin"),
        "other user": pg_api.person("other@example.com"),
        "auditor": pg_api.person("auditor@example.com", "auditor"),
        "read key": {"X-API-Key": pg_api.key(owner, "pay", "read")},
        "write key": {"X-API-Key": pg_api.key(owner, "pay", "write")},
    }
    response = pg_api.post(URL + "/rollback", headers=callers[who], json={"to_version": 1})
    assert response.status_code == status, response.text
    assert pg_api.events() == (3 if status == 200 else 2)


def test_auditors_read_every_history_and_users_only_their_own(
    pg_api: Api, owner: dict[str, str]
) -> None:
    pg_api.put(URL, headers=owner, json={"data": {"A": 1}})
    pg_api.put("/v1/configs/pay/staging", headers=owner, json={"data": {"A": 2}})
    auditor = pg_api.person("auditor@example.com", "auditor")
    other = pg_api.person("other@example.com")
    key = {"X-API-Key": pg_api.key(owner, "pay", "read")}
    reads = [
        URL + "/history",
        URL + "/diff?from=1",
        "/v1/services/pay/compare?from_env=prod&to_env=staging",
    ]
    for path in reads:
        assert pg_api.get(path, headers=owner).status_code == 200, path
        assert pg_api.get(path, headers=auditor).status_code == 200, path
        assert pg_api.get(path, headers=other).status_code == 404, path
    assert pg_api.get(URL + "/history", headers=key).status_code == 403
    compare = pg_api.get(reads[2], headers=auditor).json()
    assert compare["changes"] == [{"op": "replace", "path": ["A"], "old": 1, "new": 2}]
    assert compare["stats"] == {"added": 0, "removed": 0, "changed": 1}
    assert (
        pg_api.get("/v1/services/pay/compare?from_env=prod&to_env=nope", headers=owner).status_code
        == 404
    )


def test_promote_all_or_some_keys(pg_api: Api, owner: dict[str, str]) -> None:
    pg_api.put("/v1/configs/pay/staging", headers=owner, json={"data": {"A": 2, "B": 2, "C": 2}})
    pg_api.put(URL, headers=owner, json={"data": {"A": 1, "B": 1, "P": 1}})
    some = pg_api.post(
        "/v1/configs/pay/staging/promote",
        headers=owner,
        json={"to_environment": "prod", "keys": ["A", "C"], "reason": "ship A and C"},
    )
    assert some.status_code == 200, some.text
    assert some.json()["data"] == {"A": 2, "B": 1, "C": 2, "P": 1}
    item = pg_api.get(URL + "/history?limit=1", headers=owner).json()["items"][0]
    assert item["action"] == "promoted" and item["promoted_from"] == {
        "environment": "staging",
        "version": 1,
    }
    assert item["reason"] == "ship A and C"

    everything = pg_api.post(
        "/v1/configs/pay/staging/promote", headers=owner, json={"to_environment": "qa"}
    )
    assert everything.status_code == 201 and everything.json()["data"] == {"A": 2, "B": 2, "C": 2}

    before = pg_api.events()
    stale = pg_api.post(
        "/v1/configs/pay/staging/promote",
        headers=owner,
        json={"to_environment": "prod", "expected_version": 1},
    )
    assert stale.status_code == 412 and pg_api.events() == before
    missing = pg_api.post(
        "/v1/configs/pay/staging/promote",
        headers=owner,
        json={"to_environment": "prod", "keys": ["NOPE"]},
    )
    assert missing.status_code == 422 and pg_api.events() == before
    assert (
        pg_api.post(
            "/v1/configs/pay/staging/promote", headers=owner, json={"to_environment": "staging"}
        ).status_code
        == 422
    )
    auditor = pg_api.person("auditor@example.com", "auditor")
    assert (
        pg_api.post(
            "/v1/configs/pay/staging/promote", headers=auditor, json={"to_environment": "prod"}
        ).status_code
        == 403
    )
    assert pg_api.events() == before


def test_reads_of_the_past_stay_exact_across_snapshots(pg_api: Api, owner: dict[str, str]) -> None:
    from projections.snapshots import SNAPSHOT_EVERY

    total = SNAPSHOT_EVERY * 2 + 7
    for i in range(1, total + 1):
        pg_api.patch(URL, headers=owner, json={"data": {f"K{i % 7}": i, "LAST": i}})
    with pg_api.engine.connect() as conn:
        from sqlalchemy import text

        snaps = (
            conn.execute(text("SELECT version FROM config_snapshots ORDER BY version"))
            .scalars()
            .all()
        )
    assert snaps == [SNAPSHOT_EVERY, SNAPSHOT_EVERY * 2]
    for n in (
        1,
        SNAPSHOT_EVERY - 1,
        SNAPSHOT_EVERY,
        SNAPSHOT_EVERY + 1,
        SNAPSHOT_EVERY * 2 + 3,
        total,
    ):
        data = pg_api.get(f"{URL}?version={n}", headers=owner).json()["data"]
        expected = {f"K{i % 7}": i for i in range(max(1, n - 6), n + 1)} | {"LAST": n}
        assert data == expected, n
