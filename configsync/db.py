"""Engine, sessions, and the unit of work: commit (then the after-commit work) or roll back.

Two dialects are supported: PostgreSQL (production) and SQLite (the embedded default). Everything
dialect-specific about connections lives here; the store adds only its lock statements.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, create_engine, event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

log = logging.getLogger(__name__)

AFTER_COMMIT = "configsync.after_commit"


class Base(DeclarativeBase):
    pass


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the dialect keeps.

    SQLite has no time zones: values are stored as naive UTC and come back tagged as UTC, so that
    comparisons and the hash chain see the same instant on both dialects.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def normalize_url(url: str) -> str:
    """Name the driver: psycopg2 for PostgreSQL (SQLAlchemy 2.1 would pick psycopg 3)."""
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg2://" + url[len(scheme) :]
    return url


def make_engine(
    url: str,
    *,
    lock_timeout: float | None = None,
    idle_in_transaction_timeout: float | None = None,
    **kwargs: Any,
) -> Engine:
    """An engine for `url`. On PostgreSQL, the timeouts (seconds) bound how long a statement
    waits for a lock and how long a transaction may sit idle: one stuck transaction then
    cannot hold every writer forever (SQLite bounds its lock waits with busy_timeout)."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        return _sqlite_engine(url, **kwargs)
    options = []
    if lock_timeout:
        options.append(f"-c lock_timeout={int(lock_timeout * 1000)}")
    if idle_in_transaction_timeout:
        options.append(
            f"-c idle_in_transaction_session_timeout={int(idle_in_transaction_timeout * 1000)}"
        )
    if options:
        kwargs.setdefault("connect_args", {})["options"] = " ".join(options)
    ping = kwargs.pop("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    engine = create_engine(url, **kwargs)
    if ping:
        _ping_after_idle(engine)
    return engine


def is_lock_timeout(error: DBAPIError) -> bool:
    """Whether `error` is PostgreSQL's lock_timeout ending a lock wait (lock_not_available)."""
    return getattr(error.orig, "pgcode", None) == "55P03"


# A connection used less than this long ago is taken as alive without a ping.
IDLE_BEFORE_PING = 5.0


def _ping_after_idle(engine: Engine) -> None:
    """Ping a pooled connection before use only when it has sat idle a while.

    SQLAlchemy's pool_pre_ping pings at every checkout: a round trip on every request, most of
    them a few milliseconds after the connection's last use. A connection that went away since
    then (a database restart, a proxy's idle timeout) is still caught by the ping after idling;
    one lost in the few seconds in between fails its request, which SQLAlchemy reports as a
    disconnect and answers by replacing every pooled connection of that age.
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < IDLE_BEFORE_PING:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise DisconnectionError(f"a pooled connection was dead: {error}") from error
        if not alive:
            raise DisconnectionError("a pooled connection was dead")


def _sqlite_engine(url: str, **kwargs: Any) -> Engine:
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("check_same_thread", False)
    connect_args.setdefault("timeout", 30)
    engine = create_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            # A reader (see read_only): a deferred transaction, which in WAL mode reads a
            # snapshot and never holds a writer up.
            conn.exec_driver_sql("BEGIN")
            return
        # BEGIN IMMEDIATE takes the write lock up front. A deferred transaction that reads and
        # then writes can fail with SQLITE_BUSY when another writer committed in between, and no
        # timeout helps then; taking the lock first serializes writers cleanly. This is also what
        # makes appends gapless on SQLite (see configsync.events.store).
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


READ_ONLY = "configsync_read_only"


def read_only(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """Sessions of `factory`'s engine for work that only reads (long exports): on SQLite they
    do not take the database's write lock, as every other transaction does (see below)."""
    engine: Engine = factory.kw["bind"]
    return make_session_factory(engine.execution_options(**{READ_ONLY: True}))


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` once the session's transaction has committed; drop it on rollback.

    Work that talks to the outside world (sending a Celery task, waking long-pollers) is buffered
    here so that it never announces an event that was rolled back.
    """
    session.info.setdefault(AFTER_COMMIT, []).append(callback)


def commit(session: Session) -> None:
    """Commit, then run the callbacks registered with `after_commit`."""
    session.commit()
    run_after_commit(session.info.pop(AFTER_COMMIT, []))


def run_after_commit(callbacks: Iterable[Callable[[], None]]) -> None:
    """Run the work that follows a commit. A failing callback is logged and does not undo the
    commit: the event is durable and the periodic catch-up will do whatever the callback failed
    to start."""
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("after-commit callback %r failed", callback)


def rollback(session: Session) -> None:
    session.info.pop(AFTER_COMMIT, None)
    session.rollback()


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits when the block ends normally and rolls back when it raises."""
    session = factory()
    try:
        yield session
        commit(session)
    except BaseException:
        rollback(session)
        raise
    finally:
        session.close()


def upsert(
    session: Session,
    table: Any,
    values: dict[str, Any] | list[dict[str, Any]],
    *,
    key: list[str],
    update: list[str],
    where: Any = None,
) -> None:
    """INSERT … ON CONFLICT (key) DO UPDATE SET update…; both dialects speak it. `where` is a
    condition, or a function of the row proposed (`excluded`) that makes one."""
    if not values:
        return
    if where is None:  # built once per table
        dialect = session.get_bind().dialect.name
        statement = _plain_upsert(dialect, getattr(table, "__table__", table), (*key,), (*update,))
    else:
        statement = _insert(session, table)
        statement = statement.on_conflict_do_update(
            index_elements=key,
            set_={name: statement.excluded[name] for name in update},
            where=where(statement.excluded) if callable(where) else where,
        )
    # Rows as parameters, not as VALUES: the statement compiles once and is cached, however
    # many rows there are (SQLAlchemy still sends them as one multi-row INSERT).
    session.execute(statement, _one_or_many(values))


@functools.cache
def _plain_upsert(dialect: str, table: Any, key: tuple[str, ...], update: tuple[str, ...]) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    statement = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    return statement.on_conflict_do_update(
        index_elements=list(key), set_={name: statement.excluded[name] for name in update}
    )


def insert_missing(
    session: Session, table: Any, values: list[dict[str, Any]], *, key: list[str]
) -> None:
    """INSERT … ON CONFLICT (key) DO NOTHING: rows that already exist are left as they are."""
    insert_missing_rows(session, table, values, key=key)


def insert_missing_rows(
    executor: Session | Connection, table: Any, values: list[dict[str, Any]], *, key: list[str]
) -> None:
    """`insert_missing` on a Session or a Connection."""
    if values:
        statement = _insert(executor, table).on_conflict_do_nothing(index_elements=key)
        executor.execute(statement, _one_or_many(values))


def _one_or_many(values: dict[str, Any] | list[dict[str, Any]]) -> Any:
    """One row as a plain execute; several as one executemany (a multi-row INSERT)."""
    return values[0] if isinstance(values, list) and len(values) == 1 else values


def _insert(executor: Session | Connection, table: Any) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    bind = executor.get_bind() if isinstance(executor, Session) else executor
    # The table, not the mapped class: a Core statement, which the session runs as it is, not
    # through the ORM's bulk-insert machinery (a fifth of a group commit's time for one row).
    table = getattr(table, "__table__", table)
    return (postgresql.insert if bind.dialect.name == "postgresql" else sqlite.insert)(table)
