"""The console's pages: each one asks the same query, command and permission functions the API
endpoints do, and renders a template instead of JSON.

Errors are pages too: `ConsolePage` turns a domain error into the error page with its status
(a config the person may not see is "not found", as in the API), a missing session into the
sign-in form, and `Again` into the form that was posted, with what was typed kept and the error
shown. The request's unit of work has rolled back by then.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from configsync.audit import log
from configsync.audit.endpoints import export
from configsync.audit.queries import filtered, page, page_touching, verify
from configsync.auth import service as people
from configsync.auth.deps import get_authenticator, get_login_throttle
from configsync.auth.permissions import (
    ADMIN,
    AUDITOR,
    Caller,
    authorize_owner_or_admin,
    authorize_write,
    can_read_history,
    require_role,
)
from configsync.auth.schemas import Signup
from configsync.configs import commands, queries, receipts
from configsync.configs.auth import (
    history_access,
    manage_access,
    read_access,
    write_access,
    write_context,
)
from configsync.configs.commands import WriteContext
from configsync.console.session import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    CheckedForm,
    Person,
    SignedOut,
    csrf_token,
    field,
    forget_cookie,
    renew_csrf,
    set_cookie,
)
from configsync.deps import SessionDep, SettingsDep
from configsync.domain.documents import Document, parse_key
from configsync.domain.events import ACTIONS
from configsync.domain.secrets import envelopes, mask, masked
from configsync.errors import (
    ConfigSyncError,
    Deleted,
    InvalidInput,
    NotFound,
    VersionConflict,
)
from configsync.events import format_instant
from projections.audit import as_item

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

# Only this origin's scripts, styles and forms; no framing; nothing inline.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages may hold revealed secrets
}
NOTICES = {
    "created": "Created version {v}.",
    "saved": "Saved as version {v}.",
    "unchanged": "Nothing changed: the document is the same, no version was written.",
    "rolled_back": "Rolled back: the document is now version {v}.",
    "promoted": "Promoted: {env} is now at version {v}.",
    "revoked": "The key was revoked: it stops working on its next request.",
    "deleted": "This config is deleted; its history is kept. Roll back to a version to restore it.",
}
HISTORY_PAGE = 20
AUDIT_PAGE = 50


class Again(Exception):
    """Show the posted form again, with what was typed and what was wrong."""

    def __init__(self, template: str, error: str, status: int, **context: Any) -> None:
        super().__init__(error)
        self.template, self.error, self.status, self.context = template, error, status, context


def finish(request: Request, response: Response) -> Response:
    """Every console answer: the security headers, and the CSRF cookie when it is new."""
    response.headers.update(SECURITY_HEADERS)
    token = getattr(request.state, "new_csrf", None)
    if token:
        set_cookie(request, response, CSRF_COOKIE, token)
    return response


def render(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    csrf = csrf_token(request)
    response = templates.TemplateResponse(
        request,
        template,
        {
            "csrf": csrf,
            "me": getattr(request.state, "person", None),
            "status_code": status,
            **context,
        },
        status_code=status,
    )
    return finish(request, response)


def redirect(request: Request, path: str, **query: Any) -> Response:
    target = path + ("?" + urlencode(query) if query else "")
    return finish(request, RedirectResponse(target, status_code=303))


class ConsolePage(APIRoute):
    """A console route: its errors are answered as pages."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except SignedOut:
                here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return redirect(request, "/ui/login", next=here)
            except Again as again:
                context = {**again.context, "error": again.error}
                return render(request, again.template, again.status, **context)
            except ConfigSyncError as exc:
                return render(request, "error.html", exc.status_code, error=exc.detail)
            except RequestValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(map(str, e.get('loc', ())[1:]))}: {e.get('msg', '')}"
                    for e in exc.errors()[:5]
                )
                return render(request, "error.html", 422, error=problems)

        return answer


router = APIRouter(prefix="/ui", route_class=ConsolePage, include_in_schema=False)


# --- what the pages show ----------------------------------------------------------------------


def is_masked(value: Any) -> bool:
    return isinstance(value, dict) and value.get("masked") is True and "fingerprint" in value


def leaves(document: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for every leaf of a document; arrays and masked secrets are leaves."""
    if isinstance(document, dict) and document and not is_masked(document):
        for key, value in document.items():
            yield from leaves(value, (*path, key))
    elif path:
        yield queries.dotted([str(p) for p in path]), document


def shown(value: Any) -> str:
    """A value as one line of text: JSON, a masked secret as dots and its fingerprint."""
    if is_masked(value):
        state = "destroyed" if value.get("destroyed") else "secret"
        return f"•••••• ({state} {value['fingerprint'][:12]})"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


templates.env.filters["shown"] = shown
templates.env.filters["dotted"] = lambda path: queries.dotted([str(p) for p in path]) or "(root)"
templates.env.filters["when"] = lambda at: at.strftime("%Y-%m-%d %H:%M:%S UTC") if at else ""
templates.env.filters["iso"] = lambda at: format_instant(at) if at else ""
templates.env.globals["is_masked"] = is_masked


def permitted(check: Callable[[], None]) -> bool:
    try:
        check()
    except ConfigSyncError:
        return False
    return True


def may_write(caller: Caller, access: Any) -> bool:
    return permitted(
        lambda: authorize_write(
            caller, access.service, access.environment, access.owner_id, access.exists
        )
    )


def may_manage(caller: Caller, access: Any) -> bool:
    return permitted(
        lambda: authorize_owner_or_admin(
            caller, access.service, access.owner_id, access.exists, "manage"
        )
    )


def environments(session: Session, caller: Caller, service: str) -> list[str]:
    return [c.environment for c in queries.list_readable(session, caller, service=service)]


def context_for_writes(request: Request, caller: Caller, session: Session) -> WriteContext:
    return write_context(request, caller, request.app.state.settings, session, b"")


def parse_document(text: str) -> Document:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"the document is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidInput("the document must be a JSON object ({...})")
    return document


def kept_secrets(session: Session, request: Request, edited: Document, stored: Document) -> Any:
    """The edited document with every secret left as its mask put back as the value it stands
    for: the editor shows masks, and a mask saved unchanged keeps the secret."""
    vault = request.app.state.vault
    result: Any = edited
    for path, envelope in envelopes(stored):
        node: Any = result
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(path[-1]) == masked(envelope):
            node[path[-1]] = vault.open_value(session, envelope, path)
    return result


def expected(form: FormData) -> int:
    try:
        return int(field(form, "expected_version"))
    except ValueError:
        raise InvalidInput("expected_version must be a whole number") from None


def optional(value: str | None) -> str | None:
    return value.strip() or None if value else None


# --- signing in and out -------------------------------------------------------------------------


def safe_next(target: str | None) -> str:
    """Only a page of the console: never another site (no open redirect)."""
    if target and target.startswith("/ui") and not target.startswith("//"):
        return target
    return "/ui"


def signed_in(request: Request, user: Any, target: str) -> Response:
    token, lifetime = people.access_token(user, request.app.state.settings)
    renew_csrf(request)
    response = redirect(request, safe_next(target))
    set_cookie(request, response, SESSION_COOKIE, token, max_age=lifetime)
    return response


@router.get("/login")
def login_page(request: Request, settings: SettingsDep, next: str = "/ui") -> Response:
    return render(request, "login.html", next=safe_next(next), signup=settings.signup_open)


@router.post("/login")
def login(
    request: Request, form: CheckedForm, session: SessionDep, settings: SettingsDep
) -> Response:
    name, target = field(form, "login"), safe_next(field(form, "next", required=False))
    password = form.get("password")
    address = request.client.host if request.client else "unknown"
    context = {"login": name, "next": target, "signup": settings.signup_open}
    try:
        user = people.log_in(
            session,
            get_login_throttle(request),
            name,
            password if isinstance(password, str) else "",
            address,
        )
    except ConfigSyncError as exc:  # wrong password (401) or throttled (429)
        raise Again("login.html", exc.detail, exc.status_code, **context) from None
    return signed_in(request, user, target)


@router.get("/signup")
def signup_page(request: Request, settings: SettingsDep) -> Response:
    return render(request, "signup.html", signup=settings.signup_open)


@router.post("/signup")
def signup(
    request: Request, form: CheckedForm, session: SessionDep, settings: SettingsDep
) -> Response:
    email = field(form, "email")
    if not settings.signup_open:
        raise Again("signup.html", "sign-up is closed: an admin creates accounts", 403)
    password = form.get("password")
    try:  # the API's body model: the same rules for the address as POST /auth/signup
        body = Signup(email=email, password=password if isinstance(password, str) else "")
    except ValidationError as exc:
        problem = "; ".join(e["msg"] for e in exc.errors())
        raise Again("signup.html", problem, 422, email=email, signup=True) from None
    try:
        user = people.signup(session, body.email, body.password)
    except ConfigSyncError as exc:
        raise Again("signup.html", exc.detail, exc.status_code, email=email, signup=True) from None
    return signed_in(request, user, "/ui")


@router.post("/logout")
def logout(request: Request, form: CheckedForm, session: SessionDep, person: Person) -> Response:
    """Revoke the session's token everywhere, then forget the cookie."""
    if person.token_id:
        people.log_out(session, person.token_id, request.app.state.settings)
    response = redirect(request, "/ui/login")
    forget_cookie(request, response, SESSION_COOKIE)
    return response


# --- configs ------------------------------------------------------------------------------------


@router.get("")
def configs(
    request: Request,
    session: SessionDep,
    person: Person,
    q: Annotated[str, Query(max_length=200)] = "",
    key: Annotated[str, Query(max_length=500)] = "",
) -> Response:
    """The configs the person may read; searched by service or environment, and by key."""
    path = parse_key(key.strip()) if key.strip() else None
    items = queries.list_readable(session, person, has_key=path)
    words = q.lower().split()
    if words:
        items = [c for c in items if all(w in f"{c.service} {c.environment}" for w in words)]
    return render(request, "configs.html", items=items, q=q, key=key)


@router.get("/new")
def new_page(
    request: Request, person: Person, service: str = "", environment: str = ""
) -> Response:
    return render(
        request, "new.html", service=service, environment=environment or "production", text="{}"
    )


@router.post("/new")
def create(request: Request, form: CheckedForm, session: SessionDep, person: Person) -> Response:
    service, environment = field(form, "service"), field(form, "environment")
    text, reason = field(form, "document"), optional(field(form, "reason", required=False))
    context = {"service": service, "environment": environment, "text": text, "reason": reason}
    try:
        access = write_access(session, person, service, environment)
        result = commands.replace(
            session,
            access.service,
            access.environment,
            parse_document(text),
            context_for_writes(request, person, session),
            reason=reason,
            expected_version=0,
        )
    except VersionConflict:
        raise Again(
            "new.html",
            f"{service}/{environment} already exists: open it to edit it",
            409,
            **context,
        ) from None
    except InvalidInput as exc:
        raise Again("new.html", exc.detail, exc.status_code, **context) from None
    return redirect(
        request, f"/ui/configs/{service}/{environment}", notice="created", v=result.version
    )


def config_page(
    request: Request,
    session: SessionDep,
    person: Caller,
    service: str,
    environment: str,
    *,
    version: int | None = None,
    revealed: Document | None = None,
) -> Response:
    access = read_access(session, person, service, environment)
    try:
        current = queries.get(session, service, environment)
    except Deleted:
        if not can_read_history(person, access.owner_id):
            raise
        return redirect(request, f"/ui/configs/{service}/{environment}/history", notice="deleted")
    if version is not None and version != current.version:
        past = queries.get_version(session, service, environment, version)
        document, at, by = past.document, past.recorded_at, past.actor
    else:
        version, document, at, by = (
            current.version,
            current.document,
            current.updated_at,
            current.updated_by,
        )
    secret_keys = {queries.dotted([str(p) for p in path]) for path, _ in envelopes(document)}
    notice = NOTICES.get(request.query_params.get("notice", ""), "")
    return render(
        request,
        "config.html",
        service=service,
        environment=environment,
        version=version,
        current_version=current.version,
        updated_at=at,
        updated_by=by,
        rows=list(leaves(revealed if revealed is not None else mask(document))),
        secret_keys=secret_keys,
        revealed=revealed is not None,
        document=json.dumps(mask(document), indent=2, ensure_ascii=False),
        may_write=may_write(person, access),
        may_manage=may_manage(person, access),
        may_history=can_read_history(person, access.owner_id),
        environments=environments(session, person, service),
        notice=notice.format(
            v=request.query_params.get("v", ""), env=request.query_params.get("env", "")
        ),
    )


@router.get("/configs/{service}/{environment}")
def config(
    request: Request,
    service: str,
    environment: str,
    session: SessionDep,
    person: Person,
    version: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """A config: its document (secret values masked), and what may be done with it."""
    return config_page(request, session, person, service, environment, version=version)


@router.post("/configs/{service}/{environment}/reveal")
def reveal(
    request: Request,
    service: str,
    environment: str,
    form: CheckedForm,
    session: SessionDep,
    person: Person,
) -> Response:
    """The current document with its secret values in plain text (owner, admin): recorded in the
    log exactly as the API's reveal is."""
    manage_access(session, person, service, environment, "reveal secrets")
    current = queries.get(session, service, environment)
    paths = [list(path) for path, _ in envelopes(current.document)]
    opened = request.app.state.vault.open(session, current.document)
    if paths:
        commands.record_reveal(
            session,
            service,
            environment,
            current.version,
            current.version,
            paths,
            context_for_writes(request, person, session),
        )
    return config_page(request, session, person, service, environment, revealed=opened)


@router.get("/configs/{service}/{environment}/edit")
def edit_page(
    request: Request, service: str, environment: str, session: SessionDep, person: Person
) -> Response:
    write_access(session, person, service, environment)
    current = queries.get(session, service, environment)
    text = json.dumps(mask(current.document), indent=2, ensure_ascii=False)
    return render(
        request,
        "edit.html",
        service=service,
        environment=environment,
        version=current.version,
        text=text,
        secrets=any(True for _ in envelopes(current.document)),
    )


@router.post("/configs/{service}/{environment}/edit")
def save(
    request: Request,
    service: str,
    environment: str,
    form: CheckedForm,
    session: SessionDep,
    person: Person,
) -> Response:
    """Write the edited document as a new version, if no one wrote since the editor opened."""
    write_access(session, person, service, environment)
    text, reason = field(form, "document"), optional(field(form, "reason", required=False))
    started_from = expected(form)
    context = {
        "service": service,
        "environment": environment,
        "version": started_from,
        "text": text,
        "reason": reason,
    }
    try:
        current = queries.get(session, service, environment)
        edited = kept_secrets(session, request, parse_document(text), current.document)
        result = commands.replace(
            session,
            service,
            environment,
            edited,
            context_for_writes(request, person, session),
            reason=reason,
            expected_version=started_from,
        )
    except VersionConflict:
        latest = queries.get(session, service, environment).version
        raise Again(
            "edit.html",
            f"version {latest} was written after you opened the editor at version "
            f"{started_from}: nothing was saved. Your text is kept below; compare, then edit "
            "the current version.",
            409,
            conflict=latest,
            **context,
        ) from None
    except InvalidInput as exc:
        raise Again("edit.html", exc.detail, exc.status_code, **context) from None
    notice = "saved" if result.changed else "unchanged"
    return redirect(
        request, f"/ui/configs/{service}/{environment}", notice=notice, v=result.version
    )


@router.get("/configs/{service}/{environment}/history")
def history(
    request: Request,
    service: str,
    environment: str,
    session: SessionDep,
    person: Person,
    before_version: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """The timeline: who, when, what, why; newest first, a page at a time."""
    access = history_access(session, person, service, environment)
    found = queries.history(
        session, service, environment, limit=HISTORY_PAGE, before_version=before_version
    )
    return render(
        request,
        "history.html",
        service=service,
        environment=environment,
        items=found.items,
        next_before=found.next_before_version,
        latest=queries.latest_version(session, service, environment),
        may_manage=may_manage(person, access),
        notice=NOTICES.get(request.query_params.get("notice", ""), ""),
    )


def _changes(found: queries.Difference) -> list[dict[str, Any]]:
    return [{**c, "key": queries.dotted([str(p) for p in c["path"]])} for c in found.changes]


@router.get("/configs/{service}/{environment}/diff")
def diff(
    request: Request,
    service: str,
    environment: str,
    session: SessionDep,
    person: Person,
    from_version: Annotated[int, Query(alias="from", ge=1)],
    to_version: Annotated[int | None, Query(alias="to", ge=1)] = None,
    view: Annotated[str, Query(pattern="^(unified|split)$")] = "unified",
) -> Response:
    """What changed between two versions, secrets masked."""
    history_access(session, person, service, environment)
    found = queries.diff(session, service, environment, from_version, to_version)
    return render(
        request,
        "diff.html",
        service=service,
        environment=environment,
        a=found.from_version,
        b=found.to_version,
        changes=_changes(found.difference),
        stats=found.difference.stats,
        view=view,
        latest=queries.latest_version(session, service, environment),
    )


@router.get("/configs/{service}/{environment}/rollback")
def rollback_page(
    request: Request,
    service: str,
    environment: str,
    session: SessionDep,
    person: Person,
    to: Annotated[int, Query(ge=1)],
) -> Response:
    """The confirmation: the change a rollback to version `to` will make."""
    manage_access(session, person, service, environment, "roll back")
    return _rollback_form(request, session, service, environment, to)


def _rollback_form(
    request: Request, session: Session, service: str, environment: str, to: int, **extra: Any
) -> Response:
    latest = queries.latest_version(session, service, environment)
    found = queries.diff(session, service, environment, latest, to)
    return render(
        request,
        "rollback.html",
        status=extra.pop("status", 200),
        service=service,
        environment=environment,
        to=to,
        version=latest,
        changes=_changes(found.difference),
        stats=found.difference.stats,
        **extra,
    )


@router.post("/configs/{service}/{environment}/rollback")
def rollback(
    request: Request,
    service: str,
    environment: str,
    form: CheckedForm,
    session: SessionDep,
    person: Person,
) -> Response:
    manage_access(session, person, service, environment, "roll back")
    if not field(form, "to").isdigit() or int(field(form, "to")) < 1:
        raise InvalidInput("to is the version to roll back to: a whole number from 1")
    to = int(field(form, "to"))
    reason = field(form, "reason", required=False)
    if not reason:
        return _rollback_form(
            request, session, service, environment, to, status=422, error="a reason is required"
        )
    result = commands.rollback(
        session,
        service,
        environment,
        to,
        context_for_writes(request, person, session),
        reason=reason,
        expected_version=expected(form),
    )
    return redirect(
        request, f"/ui/configs/{service}/{environment}", notice="rolled_back", v=result.version
    )


@router.get("/configs/{service}/{environment}/clients")
def clients(
    request: Request, service: str, environment: str, session: SessionDep, person: Person
) -> Response:
    """Read receipts: which API keys read which version, and which are behind."""
    history_access(session, person, service, environment)
    current = queries.get(session, service, environment)
    found = receipts.clients(
        session, service, environment, request.app.state.config_reader.receipts
    )
    return render(
        request,
        "clients.html",
        service=service,
        environment=environment,
        version=current.version,
        clients=found,
    )


# --- services: compare and promote, API keys ---------------------------------------------------


@router.get("/services/{service}/compare")
def compare(
    request: Request,
    service: str,
    session: SessionDep,
    person: Person,
    from_env: str = "",
    to_env: str = "",
) -> Response:
    """Two environments side by side; the keys that differ can be promoted."""
    envs = environments(session, person, service)
    if not envs:  # none it may read, or none left undeleted: as for a service that is not there
        raise NotFound(f"service {service!r} not found")
    from_env = from_env or envs[0]
    to_env = to_env or next((e for e in envs if e != from_env), from_env)
    for environment in (from_env, to_env):
        access = read_access(session, person, service, environment)
    found = queries.compare(session, service, from_env, to_env)
    source = queries.get(session, service, from_env).document
    promotable = sorted(
        {str(c["path"][0]) for c in found.difference.changes if c["path"]} & set(source)
    )
    return render(
        request,
        "compare.html",
        service=service,
        envs=envs,
        from_env=from_env,
        to_env=to_env,
        found=found,
        changes=_changes(found.difference),
        promotable=promotable,
        may_promote=may_manage(person, access) and from_env != to_env,
        notice=NOTICES.get(request.query_params.get("notice", ""), "").format(
            v=request.query_params.get("v", ""), env=to_env
        ),
    )


@router.post("/services/{service}/promote")
def promote(
    request: Request, service: str, form: CheckedForm, session: SessionDep, person: Person
) -> Response:
    from_env, to_env = field(form, "from_env"), field(form, "to_env")
    keys = [k for k in form.getlist("keys") if isinstance(k, str)]
    if not keys:
        raise InvalidInput("choose at least one key to promote")
    manage_access(session, person, service, from_env, "promote")
    result = commands.promote(
        session,
        service,
        from_env,
        to_env,
        context_for_writes(request, person, session),
        keys=keys,
        reason=optional(field(form, "reason", required=False)),
        expected_version=expected(form),
    )
    return redirect(
        request,
        f"/ui/services/{service}/compare",
        from_env=from_env,
        to_env=to_env,
        notice="promoted",
        v=result.version,
    )


def _keys_page(
    request: Request, session: Session, person: Caller, service: str, **extra: Any
) -> Response:
    exists, owner = people.service_owner(session, service)
    authorize_owner_or_admin(person, service, owner, exists, "manage API keys")
    rows = people.list_api_keys(session, person, service)
    return render(
        request,
        "keys.html",
        status=extra.pop("status", 200),
        service=service,
        keys=rows,
        environments=environments(session, person, service),
        notice=NOTICES.get(request.query_params.get("notice", ""), ""),
        **extra,
    )


@router.get("/services/{service}/keys")
def keys(request: Request, service: str, session: SessionDep, person: Person) -> Response:
    """The service's API keys (owner, admin): create (the key is shown once), revoke."""
    return _keys_page(request, session, person, service)


@router.post("/services/{service}/keys")
def create_key(
    request: Request, service: str, form: CheckedForm, session: SessionDep, person: Person
) -> Response:
    days = field(form, "expires_in_days", required=False)
    permission = field(form, "permission")
    if permission not in ("read", "write"):
        raise InvalidInput("permission is read or write")
    if days and not (days.isdigit() and 1 <= int(days) <= 3650):
        raise InvalidInput("expires in days is a whole number from 1 to 3650")
    row, key = people.create_api_key(
        session,
        person,
        name=field(form, "name")[:100],
        service=service,
        environment=optional(field(form, "environment", required=False)),
        permission=permission,
        expires_in_days=int(days) if days else None,
    )
    return _keys_page(request, session, person, service, new_key=key, new_name=row.name)


@router.post("/services/{service}/keys/{key_id}/revoke")
def revoke_key(
    request: Request,
    service: str,
    key_id: str,
    form: CheckedForm,
    session: SessionDep,
    person: Person,
) -> Response:
    people.revoke_api_key(session, person, key_id, forget=get_authenticator(request).forget)
    return redirect(request, f"/ui/services/{quote(service)}/keys", notice="revoked")


# --- the audit log and the transparency log ---------------------------------------------------


def _audit_query(params: dict[str, str]) -> Any:
    action = params.get("action") or None
    if action is not None and action not in ACTIONS:
        raise InvalidInput(f"action is one of {', '.join(ACTIONS)}")
    return filtered(
        params.get("service") or None,
        params.get("environment") or None,
        params.get("actor") or None,
        action,
        None,
        None,
    )


AUDIT_FILTERS = ("service", "environment", "actor", "action", "key")


@router.get("/audit")
def audit(
    request: Request,
    session: SessionDep,
    person: Person,
    cursor: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    """The audit log (admins, auditors), filtered, a page at a time, exportable."""
    require_role(person, ADMIN, AUDITOR)
    params = {k: request.query_params.get(k, "").strip() for k in AUDIT_FILTERS}
    query = _audit_query(params)
    if params["key"]:
        rows, next_cursor = page_touching(
            session, query, parse_key(params["key"]), after=cursor, limit=AUDIT_PAGE
        )
    else:
        rows, next_cursor = page(session, query, after=cursor, limit=AUDIT_PAGE)
    filters = {k: v for k, v in params.items() if v}
    return render(
        request,
        "audit.html",
        items=[as_item(r) for r in rows],
        next_cursor=next_cursor,
        filters=params,
        actions=ACTIONS,
        query=urlencode(filters),
        next_query=urlencode({**filters, "cursor": next_cursor}),
    )


@router.get("/audit/export")
def audit_export(
    request: Request,
    session: SessionDep,
    person: Person,
    format: Annotated[str, Query(pattern="^(jsonl|csv)$")] = "csv",
) -> Response:
    """The filtered log as a file, streamed as the API's export is."""
    require_role(person, ADMIN, AUDITOR)
    params = {k: request.query_params.get(k, "").strip() for k in AUDIT_FILTERS}
    if params["key"]:
        raise InvalidInput("the export filters by service, environment, actor and action")
    return finish(request, export(request, session, _audit_query(params), format))


@router.get("/log")
def transparency(request: Request, session: SessionDep, person: Person) -> Response:
    """The hash chain's verification and the latest signed checkpoint (admins, auditors)."""
    require_role(person, ADMIN, AUDITOR)
    return render(request, "log.html", chain=verify(session), checkpoint=log.latest(session))
