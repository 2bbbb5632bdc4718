"""Config writes without FastAPI's routing and dependency solving: PUT and PATCH
/v1/configs/{service}/{environment}, and the original POST /config/update.

A profile of the API under PUT load (py-spy, GIL samples) put FastAPI's dependency solving,
routing and worker-thread hops at half the API's CPU per write, and the endpoint's own work at a
tenth. `DirectWrites` does what the endpoint's dependencies and the endpoint do, by the same
functions: the caller (configsync.auth.authenticator), the write context
(`plain_write_context`) and the endpoint's own work (`write_document`, `legacy_write`: the
decision, the write, the answer). Errors are answered by the application's exception handlers,
so they read as the endpoint's do.

With a group commit (PostgreSQL), a person's write, or an API key's that this process has
cached, reads nothing in its request: it is checked on the event loop and handed to the group
with its authorization (configsync.configs.deferred), whose batch reads every writer's account
and service owner in one statement and refuses in the endpoint's order; the request awaits the
outcome, holding no thread. Other writes (SQLite; a key not cached yet) read their caller in
one hop to a thread of the runtime's.

What it does not take goes on to the endpoint before anything is done: a query string, an
Idempotency-Key, a body that does not validate (the endpoint words the 422) or, for PUT and
PATCH, is not `application/json`, a name that does not match the pattern.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import re
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from configsync.auth.authenticator import Authenticator, credentials
from configsync.auth.permissions import Caller
from configsync.configs import commands
from configsync.configs.auth import plain_write_context, write_access
from configsync.configs.commands import PendingWrite, WriteContext, WritePath, WriteResult
from configsync.configs.deferred import Authorization
from configsync.configs.endpoints import expected_version, write_document, written
from configsync.configs.fastpath import ScopeHeaders
from configsync.configs.legacy_endpoints import legacy_write, legacy_written
from configsync.configs.schemas import ConfigWrite, LegacyUpdate
from configsync.db import unit_of_work
from configsync.deps import client_of
from configsync.domain.names import NAME_PATTERN
from configsync.errors import ConfigSyncError, Unauthorized
from configsync.hygiene import MALFORMED
from configsync.metrics import CONFIG_ROUTE, REQUEST_COUNTS
from configsync.middleware import JSON_BODY, new_request_id
from configsync.secrets.vault import Vault
from configsync.settings import Settings

_PATH = re.compile(r"/v1/configs/([^/]+)/([^/]+)")
# Each method's command, and the function that checks its write and makes it (for a write
# whose authorization is left to its batch).
OPERATIONS: dict[str, tuple[Callable[..., WriteResult], Callable[..., PendingWrite]]] = {
    "PUT": (commands.replace, commands.replacing),
    "PATCH": (commands.patch, commands.patching),
}


class DirectWrites:
    """ASGI middleware: PUT and PATCH /v1/configs/{service}/{environment} and POST
    /config/update, when it can."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator,
        sessions: sessionmaker[Session],
        settings: Settings,
        vault: Vault,
        path: WritePath,
        threads: Executor,
        count: bool = True,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.sessions = sessions
        self.settings = settings
        self.vault = vault
        self.path = path
        self.threads = threads
        self.count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        taken = self._takes(scope)
        if taken is None:
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        route, headers = taken
        # The body as json.loads gives it, parsed by the request guard (which hands the bytes
        # on unread): the endpoint gets them untouched if the body is not taken here.
        state = scope.setdefault("state", {})
        parsed = state.get(JSON_BODY, MALFORMED)
        body = None if parsed is MALFORMED else route.parse(parsed)
        if body is None:  # the endpoint says what is wrong with it
            await self.app(scope, receive, send)
            return
        state["route"] = route.template  # for the request log (configsync.logs)
        try:
            authorization = self._deferrable(route, body, headers)
            if authorization is not None:
                # Nothing here waits on the database: checked on the event loop, handed to the
                # group, awaited (configsync.configs.deferred).
                response = await self._submitted(route, body, headers, state, authorization)
            else:
                # A plain executor, not Starlette's run_in_threadpool: anyio's hop (its limiter,
                # cancel scope and queue) cost 136 us of CPU a call against the executor's 40
                # (eight concurrent callers), 5% of a write's API CPU.
                response = await asyncio.get_running_loop().run_in_executor(
                    self.threads, self._write, route, body, headers, state
                )
        except Exception as exc:
            response = await _handled(scope, receive, exc)
        await response(scope, receive, send)
        if self.count:
            seconds = time.perf_counter() - began
            REQUEST_COUNTS.count(route.template, scope["method"], response.status_code, seconds)

    def _takes(self, scope: Scope) -> tuple[Route, ScopeHeaders] | None:
        if scope["type"] != "http" or scope.get("query_string"):
            return None
        method, path = scope["method"], scope["path"]
        if method == "POST" and path == "/config/update":
            route: Route | None = LEGACY_UPDATE
        elif method in OPERATIONS and (match := _PATH.fullmatch(path)) is not None:
            route = _config_route(OPERATIONS[method], *match.groups())
        else:
            route = None
        if route is None:
            return None
        headers = ScopeHeaders.of(scope)
        if "idempotency-key" in headers:
            return None
        media_type = (headers.get("content-type") or "").partition(";")[0].strip().lower()
        if route.json_only and media_type != "application/json":
            return None
        return route, headers

    def _write(
        self, route: Route, body: Any, headers: ScopeHeaders, state: dict[str, Any]
    ) -> Response:
        """What the endpoint's dependencies and the endpoint do, in the same order."""
        creds = credentials(headers)
        with unit_of_work(self.sessions) as session:
            caller = self.authenticator.cached(creds) or self.authenticator.resolve(
                session, creds, owner_of=route.service(body)
            )
            state["caller"] = caller.log_name
            ctx = self._context(caller, headers, state)
            return route.write(session, caller, body, headers, ctx)

    def _context(
        self, caller: Caller, headers: ScopeHeaders, state: dict[str, Any]
    ) -> WriteContext:
        return plain_write_context(
            caller,
            self.settings,
            self.vault,
            self.path,
            state.get("request_id") or new_request_id(),
            client_of(headers.get("user-agent")),
        )

    def _deferrable(self, route: Route, body: Any, headers: ScopeHeaders) -> Authorization | None:
        """The write's authorization, to be settled in its batch (configsync.configs.deferred),
        when the request can hand it on without reading the database: with a group commit, a
        person's token or an API key this process has cached, and names that are valid (the
        endpoint's 400 for a bad name comes before its 403). Credentials refused on sight
        take the other path too, which words the refusal as the endpoint does."""
        if self.path.group is None:
            return None
        if not (
            NAME_PATTERN.fullmatch(route.service(body))
            and NAME_PATTERN.fullmatch(route.environment(body))
        ):
            return None
        try:
            creds = credentials(headers)
            if creds is None:
                return None
            caller = self.authenticator.cached(creds)
            if caller is not None:
                return Authorization(caller=caller)
            if creds.kind == "jwt":
                return Authorization(claims=self.authenticator.claims(creds))
        except Unauthorized:
            return None
        return None  # an API key this process has not cached yet: read (and cached) there

    async def _submitted(
        self,
        route: Route,
        body: Any,
        headers: ScopeHeaders,
        state: dict[str, Any],
        authorization: Authorization,
    ) -> Response:
        """The write handed to its batch with its authorization, and its answer once the batch
        has committed; what the request's own checks refuse goes with it, to be answered once
        the caller is known to be allowed."""
        if authorization.caller is not None:
            state["caller"] = authorization.caller.log_name
        caller = authorization.caller
        if caller is None:
            # Until the batch has read the person's account, the write's actor is only its id
            # (decide_and_record refuses a write whose authorization is not settled).
            assert authorization.claims is not None
            caller = Caller(kind="user", id=authorization.claims.user_id, name="")
        ctx = self._context(caller, headers, state)
        try:
            pending = route.pending(body, headers, ctx, authorization)
        except ConfigSyncError as refused:
            authorization.refusal = refused
            pending = PendingWrite(
                route.service(body), route.environment(body), ctx, None, None, None
            )
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[WriteResult] = loop.create_future()

        def done(result: WriteResult | BaseException) -> None:  # on the batch's thread
            loop.call_soon_threadsafe(_settle, outcome, result)

        commands.grouped_async(dataclasses.replace(pending, authorization=authorization), done)
        try:
            result = await outcome
        finally:
            if authorization.caller is not None:
                state["caller"] = authorization.caller.log_name
        return route.answer(body, result)


@dataclass(frozen=True, slots=True)
class Route:
    template: str  # for /metrics and the request log, as the router names it
    parse: Callable[[Any], Any | None]  # the body's model; None if the endpoint must refuse it
    # The endpoint's work, the caller known: the write's authorization, checks and answer.
    write: Callable[[Session, Caller, Any, ScopeHeaders, WriteContext], Response]
    service: Callable[[Any], str]  # the service written to, from the parsed body
    environment: Callable[[Any], str]
    # With its authorization left to the batch: the request's own checks (raising what they
    # refuse) and the write they make; then the answer to the write made.
    pending: Callable[[Any, ScopeHeaders, WriteContext, Authorization], PendingWrite]
    answer: Callable[[Any, WriteResult], Response]
    json_only: bool = True


def _config_route(
    operations: tuple[Callable[..., WriteResult], Callable[..., PendingWrite]],
    service: str,
    environment: str,
) -> Route | None:
    if not (NAME_PATTERN.fullmatch(service) and NAME_PATTERN.fullmatch(environment)):
        return None
    operation, prepare = operations

    def write(
        session: Session, caller: Caller, body: Any, headers: ScopeHeaders, ctx: WriteContext
    ) -> Response:
        access = write_access(session, caller, service, environment)
        return write_document(operation, body, headers.get("if-match"), session, access, ctx)

    def pending(
        body: Any, headers: ScopeHeaders, ctx: WriteContext, authorization: Authorization
    ) -> PendingWrite:
        # write_document's checks, in its order; the version is kept for expect_existing.
        expected = expected_version(headers.get("if-match"), body.expected_version)
        authorization.expected_version = expected
        return prepare(service, environment, body.data, ctx, body.reason, expected)

    return Route(
        CONFIG_ROUTE,
        _parser(ConfigWrite),
        write,
        lambda _body: service,
        lambda _body: environment,
        pending,
        lambda _body, result: written(result),
    )


def _parser(model: type[BaseModel]) -> Callable[[Any], Any | None]:
    def parse(value: Any) -> Any | None:
        """The body as the endpoint has it (json.loads, then the model); None when it would
        refuse it, and say why."""
        try:
            return model.model_validate(value)
        except (ValueError, RecursionError, ValidationError):
            return None

    return parse


# JSON whatever its Content-Type says, as the endpoint takes it (the original README's curl).
LEGACY_UPDATE = Route(
    "/config/update",
    _parser(LegacyUpdate),
    lambda session, caller, body, _headers, ctx: legacy_write(session, caller, body, ctx),
    lambda body: body.name,
    lambda body: body.environment,
    # legacy_write's checks: the write's own (it names no version).
    lambda body, _headers, ctx, _authorization: commands.replacing(
        body.name, body.environment, body.config, ctx, body.reason
    ),
    legacy_written,
    json_only=False,
)


def _settle(future: asyncio.Future[WriteResult], outcome: WriteResult | BaseException) -> None:
    if future.done():  # the request was cancelled meanwhile (its write is made all the same)
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


async def _handled(scope: Scope, receive: Receive, exc: Exception) -> Response:
    """The answer the application's exception handler for `exc` gives; raises `exc` if none
    handles it (as FastAPI's own error middleware would, after its 500)."""
    handlers: dict[Any, Callable[..., Any]] = scope["app"].exception_handlers
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            answer = handler(Request(scope, receive), exc)
            if inspect.isawaitable(answer):
                answer = await answer
            assert isinstance(answer, Response)
            return answer
    raise exc
