"""The Python client for ConfigSync: what services and the command line use.

    client = Client("http://configsync:8000", api_key="cs_...")
    config = client.get("payment-service", "prod")   # {"version", "data", ..., "stale": False}
    for config in client.watch("payment-service", "prod"):
        apply(config["data"])                          # every new version, as it lands

Every successful read of a current config is kept as the last good copy (one file per config,
0600, written atomically); when the server cannot be reached, `get` answers that copy marked
`"stale": True` instead of failing. `watch` long-polls, reconnects with backoff and jitter and
resumes from the last version it saw. `AsyncClient` has the same methods for asyncio. Errors
are typed: NotFound (Deleted), Conflict, Unauthorized, Unreachable, Unavailable.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
# A write is sent at most this many times (the first try and its retries), with backoff.
WRITE_ATTEMPTS = 4
RETRY_BASE_SECONDS = 0.25


class ClientError(Exception):
    """The server refused the request (`status`, `detail`), or could not be reached (0)."""

    def __init__(self, status: int, detail: Any, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.body = body or {}


class Unreachable(ClientError):
    """No answer: the server is down or the network is."""


class Unavailable(ClientError):
    """503: the server is up but its database is not; retry."""


class Unauthorized(ClientError):
    """401 or 403: no, a bad, an expired or a revoked credential, or not allowed."""


class NotFound(ClientError):
    """404: no such config (or not one the caller may see)."""


class Deleted(NotFound):
    """404 for a config deleted at `deleted_at_version`."""

    @property
    def deleted_at_version(self) -> int:
        return int(self.body.get("deleted_at_version", 0))


class Conflict(ClientError):
    """409, or 412: the config is not at the expected version (`current_version`)."""

    @property
    def current_version(self) -> int | None:
        found = self.body.get("current_version")
        return int(found) if found is not None else None


def error_of(response: httpx.Response) -> ClientError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    detail = body.get("detail", response.text)
    status = response.status_code
    kind: type[ClientError] = ClientError
    if status in (401, 403):
        kind = Unauthorized
    elif status == 404:
        kind = Deleted if "deleted_at_version" in body else NotFound
    elif status in (409, 412):
        kind = Conflict
    elif status == 503:
        kind = Unavailable
    return kind(status, detail, body)


def answer_of(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise error_of(response)
    if response.status_code == 204 or not response.content:
        return None
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    return response.text


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "configsync"


def write_private(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Write `text` to `path` atomically (a reader sees the old file or the new one), created
    with `mode` from the start."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class LastGood:
    """The last good copy of each config read, one JSON file per (server, service, environment)."""

    def __init__(self, directory: Path, server: str) -> None:
        digest = hashlib.sha256(server.encode()).hexdigest()[:12]
        self.directory = directory / digest

    def path(self, service: str, environment: str) -> Path:
        return self.directory / f"{service}.{environment}.json"

    def save(self, service: str, environment: str, answer: dict[str, Any]) -> None:
        kept = {**answer, "fetched_at": time.time()}
        kept.pop("stale", None)
        write_private(self.path(service, environment), json.dumps(kept))

    def load(self, service: str, environment: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = json.loads(self.path(service, environment).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return found


def backoff(attempt: int, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds before reconnect number `attempt`: exponential, capped, with full jitter."""
    return random.uniform(0, min(cap, base * 2**attempt))


def _retry_delay(attempt: int) -> float:
    """Seconds before sending a write again: exponential, at most 5 s, jittered."""
    return min(RETRY_BASE_SECONDS * 2**attempt, 5.0) * (0.5 + random.random())


def _config_path(service: str, environment: str) -> str:
    return f"/v1/configs/{service}/{environment}"


def _watch_request(since: int | None, wait: float) -> tuple[dict[str, str], dict[str, Any]]:
    headers = {"If-None-Match": f'"{since}"'} if since is not None else {}
    return headers, {"wait": wait} if since is not None else {}


def _headers(token: str | None, api_key: str | None) -> dict[str, str]:
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if api_key:
        headers["X-API-Key"] = api_key
    return headers


def _stale_copy(
    last_good: LastGood | None, service: str, environment: str, allowed: bool, exc: ClientError
) -> dict[str, Any]:
    """The last good copy, marked stale, for a current read the server could not answer."""
    kept = last_good.load(service, environment) if last_good is not None and allowed else None
    if kept is None:
        raise exc
    return {**kept, "stale": True}


def _kept(
    last_good: LastGood | None,
    service: str,
    environment: str,
    answer: dict[str, Any],
    current: bool,
) -> dict[str, Any]:
    """A fresh answer, kept as the last good copy when it is the current config."""
    if current and last_good is not None and not answer.get("deleted"):
        last_good.save(service, environment, answer)
    return {**answer, "stale": False}


@dataclass(frozen=True, slots=True)
class _Step:
    answer: dict[str, Any] | None  # a new version to hand out
    pause: bool = False  # deleted: nothing to wait on, poll


def _watched(response: httpx.Response, since: int | None) -> _Step:
    """What one long poll's answer means to a watcher that has seen `since`."""
    if response.status_code == 304:
        return _Step(None)
    try:
        answer: dict[str, Any] = answer_of(response)
    except Deleted as exc:
        version = exc.deleted_at_version
        gone = {"version": version, "deleted": True, "data": None}
        return _Step(gone if since != version else None, pause=True)
    return _Step(answer)


class _Base:
    """What both clients hold: the server, the credentials, the last good copies."""

    transport: type[httpx.Client] | type[httpx.AsyncClient] = httpx.Client

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        cache: Path | str | bool | None = None,
    ) -> None:
        """`cache`: where the last good copies go (default: ~/.cache/configsync); False: none."""
        self.url = url.rstrip("/")
        self.last_good: LastGood | None = None
        if cache is not False:
            directory = default_cache_dir() if cache in (None, True) else Path(str(cache))
            self.last_good = LastGood(directory, self.url)
        self._http: Any = self.transport(
            base_url=self.url, headers=_headers(token, api_key), timeout=timeout
        )


def _document(data: Any, reason: str | None, expected_version: int | None) -> dict[str, Any]:
    """The body of a PUT or PATCH."""
    return {"data": data, "reason": reason, "expected_version": expected_version}


class Client(_Base):
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(0, f"cannot reach {self.url}: {exc}") from None

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return answer_of(self._send(method, path, **kwargs))

    def _write(
        self, method: str, path: str, idempotency_key: str | None = None, **kwargs: Any
    ) -> Any:
        """A write, sent with an Idempotency-Key and sent again (same key) when the server was
        unavailable or the connection failed: the server appends it at most once."""
        key = idempotency_key or uuid.uuid4().hex
        headers = {**kwargs.pop("headers", {}), "Idempotency-Key": key}
        for attempt in range(WRITE_ATTEMPTS):
            try:
                return answer_of(self._send(method, path, headers=headers, **kwargs))
            except (Unreachable, Unavailable):
                if attempt + 1 == WRITE_ATTEMPTS:
                    raise
            time.sleep(_retry_delay(attempt))
        raise AssertionError("unreachable")

    def me(self) -> dict[str, Any]:
        """Who the server takes the caller for."""
        answer: dict[str, Any] = self._call("GET", "/v1/me")
        return answer

    def logout(self) -> None:
        """Revoke the access token this client holds, in every API process."""
        self._call("POST", "/auth/logout")

    def login(self, email: str, password: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._call(
            "POST", "/auth/login", json={"email": email, "password": password}
        )
        return answer

    def get(
        self, service: str, environment: str = "default", *, fallback: bool = True, **params: Any
    ) -> dict[str, Any]:
        """The config (`version`, `data`, `updated_at`, `updated_by`, `stale`); `version=` or
        `as_of=` for a past one. A current read is kept as the last good copy, and answered
        from it (`"stale": True`) when the server cannot be reached, unless `fallback` is off."""
        current = not params
        try:
            answer = self._call("GET", _config_path(service, environment), params=params)
        except (Unreachable, Unavailable) as exc:
            return _stale_copy(self.last_good, service, environment, current and fallback, exc)
        return _kept(self.last_good, service, environment, answer, current)

    def watch(
        self,
        service: str,
        environment: str = "default",
        *,
        since: int | None = None,
        wait: float = 30.0,
    ) -> Iterator[dict[str, Any]]:
        """Each new version of the config as it lands (the current one first, unless `since`
        names it). Long-polls; when the server goes away it reconnects with backoff and jitter
        and resumes from the last version seen, so the final state of every change arrives
        (versions written while it was away arrive as the latest of them). A deleted config
        arrives as `{"version": N, "deleted": True, "data": None}`."""
        attempt = 0
        while True:
            headers, params = _watch_request(since, wait)
            try:
                response = self._send(
                    "GET",
                    _config_path(service, environment),
                    headers=headers,
                    params=params,
                    timeout=wait + 30,
                )
                step = _watched(response, since)
            except (Unreachable, Unavailable):
                time.sleep(backoff(attempt))
                attempt += 1
                continue
            attempt = 0
            if step.answer is not None:
                since = step.answer["version"]
                yield _kept(self.last_good, service, environment, step.answer, not step.pause)
            if step.pause:
                time.sleep(min(wait, 5.0))  # a deleted config cannot be waited on: poll

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
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Replace the document (expected_version 0: it must not exist yet). Sent again on a
        failed connection or a 503 with the same idempotency key (made here unless given)."""
        body = _document(data, reason, expected_version)
        path = _config_path(service, environment)
        answer: dict[str, Any] = self._write("PUT", path, idempotency_key, json=body)
        return answer

    def patch(
        self,
        service: str,
        environment: str,
        merge: dict[str, Any],
        *,
        reason: str | None = None,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Apply a JSON merge patch (RFC 7396): null removes a key."""
        body = _document(merge, reason, expected_version)
        path = _config_path(service, environment)
        answer: dict[str, Any] = self._write("PATCH", path, idempotency_key, json=body)
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


class AsyncClient(_Base):
    """The client for asyncio: `get`, `put`, `patch` and `watch` (an async iterator), with the
    same last good copies, retries and typed errors as `Client`."""

    transport = httpx.AsyncClient

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(0, f"cannot reach {self.url}: {exc}") from None

    async def _write(self, method: str, path: str, key: str | None, body: dict[str, Any]) -> Any:
        headers = {"Idempotency-Key": key or uuid.uuid4().hex}
        for attempt in range(WRITE_ATTEMPTS):
            try:
                return answer_of(await self._send(method, path, headers=headers, json=body))
            except (Unreachable, Unavailable):
                if attempt + 1 == WRITE_ATTEMPTS:
                    raise
            await asyncio.sleep(_retry_delay(attempt))
        raise AssertionError("unreachable")

    async def get(
        self, service: str, environment: str = "default", *, fallback: bool = True, **params: Any
    ) -> dict[str, Any]:
        current = not params
        try:
            response = await self._send("GET", _config_path(service, environment), params=params)
            answer = answer_of(response)
        except (Unreachable, Unavailable) as exc:
            return _stale_copy(self.last_good, service, environment, current and fallback, exc)
        return _kept(self.last_good, service, environment, answer, current)

    async def put(
        self,
        service: str,
        environment: str,
        data: dict[str, Any],
        *,
        reason: str | None = None,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        body = _document(data, reason, expected_version)
        path = _config_path(service, environment)
        answer: dict[str, Any] = await self._write("PUT", path, idempotency_key, body)
        return answer

    async def patch(
        self,
        service: str,
        environment: str,
        merge: dict[str, Any],
        *,
        reason: str | None = None,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        body = _document(merge, reason, expected_version)
        path = _config_path(service, environment)
        answer: dict[str, Any] = await self._write("PATCH", path, idempotency_key, body)
        return answer

    async def watch(
        self,
        service: str,
        environment: str = "default",
        *,
        since: int | None = None,
        wait: float = 30.0,
    ) -> AsyncIterator[dict[str, Any]]:
        """As `Client.watch`."""
        attempt = 0
        while True:
            headers, params = _watch_request(since, wait)
            try:
                response = await self._send(
                    "GET",
                    _config_path(service, environment),
                    headers=headers,
                    params=params,
                    timeout=wait + 30,
                )
                step = _watched(response, since)
            except (Unreachable, Unavailable):
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            attempt = 0
            if step.answer is not None:
                since = step.answer["version"]
                yield _kept(self.last_good, service, environment, step.answer, not step.pause)
            if step.pause:
                await asyncio.sleep(min(wait, 5.0))


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
