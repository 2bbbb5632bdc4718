"""Signing in to the console: the session cookie, the CSRF token, the person behind a page.

The session cookie holds the same access token `/auth/login` issues (so logging out revokes it
everywhere, and a demotion applies at once); it is HttpOnly, SameSite=Strict, scoped to /ui and
Secure when the request came over HTTPS. Forms carry a CSRF token that must equal a second
cookie's value (the double-submit pattern): another site can make the browser send our cookies
(SameSite=Strict already stops that in current browsers) but can never read the token to put in
its form.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import Depends, Request, Response
from starlette.datastructures import FormData

from configsync.auth.authenticator import Credentials
from configsync.auth.deps import get_authenticator
from configsync.auth.permissions import Caller
from configsync.deps import SessionDep
from configsync.errors import ConfigSyncError, Forbidden, InvalidInput, Unauthorized

SESSION_COOKIE = "configsync_session"
CSRF_COOKIE = "configsync_csrf"
CSRF_FIELD = "csrf"
COOKIE_PATH = "/ui"


class SignedOut(ConfigSyncError):
    """No valid session: the page sends the person to the sign-in form."""

    status_code = 401


def set_cookie(
    request: Request, response: Response, name: str, value: str, max_age: int | None = None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def forget_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def csrf_token(request: Request) -> str:
    """The token this browser's forms carry: its cookie's, or a new one the response sets."""
    token = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "new_csrf", None)
    if not token:
        token = request.state.new_csrf = secrets.token_urlsafe(32)
    return token


def renew_csrf(request: Request) -> None:
    """A new token from now on (at sign-in: a token seen before it is worth nothing after)."""
    request.state.new_csrf = secrets.token_urlsafe(32)


async def checked_form(request: Request) -> FormData:
    """The posted form, once its CSRF token has been checked against the cookie."""
    form = await request.form()
    sent, expected = form.get(CSRF_FIELD), request.cookies.get(CSRF_COOKIE)
    if not (
        isinstance(sent, str) and expected and hmac.compare_digest(sent.encode(), expected.encode())
    ):
        raise Forbidden(
            "this form's CSRF token is missing or does not match: reload the page and try again"
        )
    return form


CheckedForm = Annotated[FormData, Depends(checked_form)]


def current_person(request: Request, session: SessionDep) -> Caller:
    """The person signed in to this browser (the same rules as a bearer token: revoked, expired
    or deactivated is signed out)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignedOut("sign in to use the console")
    try:
        caller = get_authenticator(request).resolve(session, Credentials("jwt", token))
    except Unauthorized:
        raise SignedOut("your session has ended: sign in again") from None
    request.state.caller = caller.log_name  # the request log's caller
    request.state.person = caller
    return caller


Person = Annotated[Caller, Depends(current_person)]


def field(form: FormData, name: str, *, required: bool = True) -> str:
    """A text field of the form, stripped; a clear error when a required one is empty."""
    value = form.get(name)
    text = value.strip() if isinstance(value, str) else ""
    if required and not text:
        raise InvalidInput(f"{name.replace('_', ' ')} is required")
    return text
