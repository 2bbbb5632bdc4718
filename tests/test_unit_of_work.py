"""Endpoints never commit: the request's unit of work commits when they return, and rolls
back when they raise, before the response starts."""

from __future__ import annotations

from typing import Any

from configsync.auth import service
from configsync.db import after_commit
from configsync.deps import SessionDep
from configsync.errors import InvalidInput
from tests.conftest import Api, scalar


def _routes(api: Api) -> list[str]:
    """Test-only endpoints that write through the request's session and commit nothing."""
    ran: list[str] = []
    app: Any = api.app

    @app.post("/test/write-and-return")
    def write_and_return(session: SessionDep) -> dict[str, str]:
        user = service.signup(session, "kept@example.com", "password123")
        after_commit(session, lambda: ran.append("kept"))
        return {"id": user.id}

    @app.post("/test/write-then-raise")
    def write_then_raise(session: SessionDep) -> dict[str, str]:
        service.signup(session, "dropped@example.com", "password123")
        after_commit(session, lambda: ran.append("dropped"))
        raise InvalidInput("refused after writing")

    @app.post("/test/async-write")
    async def async_write(session: SessionDep) -> dict[str, str]:
        user = service.signup(session, "async@example.com", "password123")
        return {"id": user.id}

    return ran


def _users(api: Api, email: str) -> int:
    return int(scalar(api.engine, "SELECT count(*) FROM users WHERE email = :e", e=email))


def test_an_endpoint_that_returns_has_committed_before_its_answer(any_api: Api) -> None:
    ran = _routes(any_api)
    response = any_api.post("/test/write-and-return")
    assert response.status_code == 200
    # Seen from another connection as soon as the answer is in: committed before it started.
    assert _users(any_api, "kept@example.com") == 1
    assert ran == ["kept"]


def test_an_endpoint_that_raises_after_writing_leaves_nothing_behind(any_api: Api) -> None:
    ran = _routes(any_api)
    response = any_api.post("/test/write-then-raise")
    assert response.status_code == 422
    assert response.json() == {"detail": "refused after writing", "error": "InvalidInput"}
    assert _users(any_api, "dropped@example.com") == 0
    assert ran == []  # after-commit work is dropped with the rollback


def test_async_endpoints_get_the_same_unit_of_work(any_api: Api) -> None:
    _routes(any_api)
    assert any_api.post("/test/async-write").status_code == 200
    assert _users(any_api, "async@example.com") == 1


def test_no_endpoint_module_commits_or_opens_its_own_transaction() -> None:
    from tests.conftest import ROOT

    for path in sorted((ROOT / "configsync").rglob("endpoints.py")):
        text = path.read_text()
        for forbidden in ("commit(", ".begin(", "unit_of_work("):
            assert forbidden not in text, f"{path.relative_to(ROOT)} calls {forbidden}"
