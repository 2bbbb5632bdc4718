"""A small Python client for ConfigSync: what services and the command line use.

client = Client("http://configsync:8000", api_key="cs_...")
config = client.get("payment-service", "prod")          # {"version": ..., "data": {...}}
dotenv = client.export("payment-service", "prod", "dotenv")
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
# A write is sent at most this many times (the first try and its retries), with backoff.
WRITE_ATTEMPTS = 4
RETRY_BASE_SECONDS = 0.25


class ClientError(Exception):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class Client:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if api_key:
            headers["X-API-Key"] = api_key
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(0, f"cannot reach {self._http.base_url}: {exc}") from None
        return self._answer(response)

    def _write(self, method: str, path: str, **kwargs: Any) -> Any:
        """A write, sent with an Idempotency-Key and sent again (same key) when the server was
        unavailable or the connection failed: the server appends it at most once."""
        headers = {**kwargs.pop("headers", {}), "Idempotency-Key": uuid.uuid4().hex}
        for attempt in range(WRITE_ATTEMPTS):
            try:
                response = self._http.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                if attempt + 1 == WRITE_ATTEMPTS:
                    raise ClientError(0, f"cannot reach {self._http.base_url}: {exc}") from None
            else:
                if response.status_code != 503 or attempt + 1 == WRITE_ATTEMPTS:
                    return self._answer(response)
            time.sleep(min(RETRY_BASE_SECONDS * 2**attempt, 5.0) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def _answer(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ClientError(response.status_code, detail)
        if response.status_code == 204 or not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def login(self, email: str, password: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._call(
            "POST", "/auth/login", json={"email": email, "password": password}
        )
        return answer

    def get(self, service: str, environment: str = "default", **params: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self._call(
            "GET", f"/v1/configs/{service}/{environment}", params=params
        )
        return answer

    def export(self, service: str, environment: str, fmt: str) -> str:
        return str(
            self._call("GET", f"/v1/configs/{service}/{environment}", params={"format": fmt})
        )

    def history(self, service: str, environment: str, *, limit: int = 50) -> dict[str, Any]:
        answer: dict[str, Any] = self._call(
            "GET", f"/v1/configs/{service}/{environment}/history", params={"limit": limit}
        )
        return answer

    def diff(
        self, service: str, environment: str, from_version: int, to_version: int | None
    ) -> dict[str, Any]:
        params: dict[str, int] = {"from": from_version}
        if to_version is not None:
            params["to"] = to_version
        answer: dict[str, Any] = self._call(
            "GET", f"/v1/configs/{service}/{environment}/diff", params=params
        )
        return answer

    def put(
        self,
        service: str,
        environment: str,
        data: dict[str, Any],
        *,
        reason: str | None = None,
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        """Replace the document (expected_version 0: it must not exist yet)."""
        body = {"data": data, "reason": reason, "expected_version": expected_version}
        answer: dict[str, Any] = self._write(
            "PUT", f"/v1/configs/{service}/{environment}", json=body
        )
        return answer

    def patch(
        self,
        service: str,
        environment: str,
        merge: dict[str, Any],
        *,
        reason: str | None = None,
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        """Apply a JSON merge patch: null removes a key."""
        body = {"data": merge, "reason": reason, "expected_version": expected_version}
        answer: dict[str, Any] = self._write(
            "PATCH", f"/v1/configs/{service}/{environment}", json=body
        )
        return answer

    def delete(
        self, service: str, environment: str, *, reason: str | None = None
    ) -> dict[str, Any]:
        answer: dict[str, Any] = self._write(
            "DELETE", f"/v1/configs/{service}/{environment}", json={"reason": reason}
        )
        return answer

    def rollback(
        self, service: str, environment: str, to_version: int, reason: str | None
    ) -> dict[str, Any]:
        answer: dict[str, Any] = self._write(
            "POST",
            f"/v1/configs/{service}/{environment}/rollback",
            json={"to_version": to_version, "reason": reason},
        )
        return answer

    def destroy_secrets(
        self, service: str, environment: str, up_to_version: int, reason: str | None
    ) -> dict[str, Any]:
        answer: dict[str, Any] = self._write(
            "POST",
            f"/v1/configs/{service}/{environment}/secrets/destroy",
            json={"up_to_version": up_to_version, "reason": reason},
        )
        return answer

    def declare_secrets(self, service: str, paths: list[str]) -> dict[str, Any]:
        answer: dict[str, Any] = self._call(
            "PUT", f"/v1/services/{service}/secrets", json={"paths": paths}
        )
        return answer

    def blame(self, service: str, environment: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._call("GET", f"/v1/configs/{service}/{environment}/blame")
        return answer

    def clients(self, service: str, environment: str) -> dict[str, Any]:
        """Read receipts: which API keys fetched which version of the config."""
        answer: dict[str, Any] = self._call("GET", f"/v1/configs/{service}/{environment}/clients")
        return answer

    def compare(self, service: str, from_env: str, to_env: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._call(
            "GET",
            f"/v1/services/{service}/compare",
            params={"from_env": from_env, "to_env": to_env},
        )
        return answer


# --- the command line's saved login -----------------------------------------------------------


def credentials_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "configsync" / "credentials.json"


def save_login(url: str, email: str, token: str) -> Path:
    path = credentials_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Created 0600 from the start: the token is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url, "email": email, "access_token": token}, handle)
    os.chmod(path, 0o600)
    return path


def saved_login() -> dict[str, str] | None:
    try:
        saved: dict[str, str] = json.loads(credentials_file().read_text())
        return saved
    except (FileNotFoundError, ValueError):
        return None


def server_url() -> str:
    saved = saved_login() or {}
    return os.environ.get("CONFIGSYNC_URL") or saved.get("url") or DEFAULT_URL
