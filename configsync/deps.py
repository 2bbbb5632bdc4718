"""Request-scoped dependencies every domain shares: the unit of work and the settings.

Endpoints never commit. `SessionDep` is the request's unit of work: when the endpoint returns,
it commits (then runs the after-commit work: task dispatch, cache invalidation, waking long
polls); when the endpoint raises, it rolls back. `scope="function"` makes that happen before the
response starts, so a write is acknowledged only once it is durable, and a commit that fails
is answered as an error, never as a success that was then lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from configsync.db import unit_of_work
from configsync.middleware import new_request_id
from configsync.settings import Settings


def session_factory(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.session_factory
    return factory


def get_session(request: Request) -> Iterator[Session]:
    with unit_of_work(session_factory(request)) as session:
        yield session


async def get_settings(request: Request) -> Settings:
    # async: FastAPI runs a plain `def` dependency on a worker thread; this only reads state.
    settings: Settings = request.app.state.settings
    return settings


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def request_id(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    return rid or new_request_id()


def client_name(request: Request) -> str | None:
    return client_of(request.headers.get("user-agent"))


def client_of(user_agent: str | None) -> str | None:
    """What the event's metadata records of the writing client: its User-Agent, cut short."""
    return (user_agent or "")[:200] or None
