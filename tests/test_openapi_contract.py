"""The OpenAPI document is exact: schemathesis sends generated requests to every operation, as
an admin and anonymously, and fails on any 5xx, any answer that does not match its documented
schema or media type, and any status code the document does not list. /docs works offline."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import Api, make_api

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def contract_api(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Any
) -> Iterator[tuple[Api, dict[str, str]]]:
    """The embedded app with a little data, so that many generated requests hit something."""
    import shutil

    from configsync.db import make_engine

    path = tmp_path_factory.mktemp("contract") / "configsync.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    for api in make_api(url, engine, login_failures_per_address="100000 per 1 second"):
        admin = api.person("admin@example.com", "admin")
        for env in ("prod", "dev"):
            api.put(f"/v1/configs/pay/{env}", headers=admin, json={"data": {"A": 1, "B": "x"}})
        api.put("/v1/configs/pay/prod", headers=admin, json={"data": {"A": 2}})
        yield api, admin
    engine.dispose()


CONTRACT_SETTINGS = settings(
    max_examples=10,
    deadline=None,
    derandomize=True,  # the same requests every run
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    database=None,
)


def _every_operation(api: Api, headers: dict[str, str]) -> None:
    """Each operation of the document, its generated requests sent, every answer checked."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:

        @given(case=operation.as_strategy())
        @CONTRACT_SETTINGS
        def check(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis groups its failures
            raise AssertionError(f"{operation.label}: {exc}") from exc


def test_every_operation_answers_an_admin_as_documented(
    contract_api: tuple[Api, dict[str, str]],
) -> None:
    _every_operation(*contract_api)


def test_every_operation_answers_anyone_as_documented(
    contract_api: tuple[Api, dict[str, str]],
) -> None:
    _every_operation(contract_api[0], {})


def test_every_error_status_is_documented_with_the_error_schema(
    contract_api: tuple[Api, dict[str, str]],
) -> None:
    api, _ = contract_api
    document = api.get("/openapi.json").json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" in responses and "413" in responses, (method, path)
            for status, answer in responses.items():
                if path in ("/health/ready", "/config/health") and status == "503":
                    continue  # health checks answer their own report, whatever it says
                if status.startswith(("4", "5")) and "content" in answer:
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (path, status)


def test_the_docs_page_loads_nothing_from_another_host_and_can_log_in(
    contract_api: tuple[Api, dict[str, str]],
) -> None:
    api, _ = contract_api
    page = api.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith(("/", "data:")) for s in sources), sources
    for asset in sources:
        if asset.startswith("/"):
            assert api.get(asset).status_code == 200, asset
    schemes = api.get("/openapi.json").json()["components"]["securitySchemes"]
    flows = [s["flows"]["password"]["tokenUrl"] for s in schemes.values() if s["type"] == "oauth2"]
    assert flows == ["/auth/login"]
    form = {"username": "admin@example.com", "password": "wrong-password"}
    assert api.post("/auth/login", data=form).status_code == 401  # the form the button sends
