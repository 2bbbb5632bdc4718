"""A config write's authorization, left to its group commit's batch.

A person's write had its request read the token's holder and the service's owner (one round
trip, a pooled connection and a session of its own) before handing its write to the group, and
an API key's write the owner. Under PUT load that was an eighth of the API's CPU and a database
transaction for every write. Here the request checks what needs no database (the token's
signature and expiry, the names, the document) and hands its write to the group with an
`Authorization`; the batch reads every such write's holder and owner in its own transaction (so
a token logged out or an account disabled in another process is refused as at once as before),
in the statement that locks and reads its configs, then authorizes each write as `write_access`
would, before deciding it.

Refusals keep their order: a token that no longer stands (401), then a caller who may not write
there (403, or 404 for a service it may not see), then a version named for a service that does
not exist (404), then what the request's own checks refused (400, 413, 422), which the request
keeps instead of raising.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from configsync.auth import service
from configsync.auth.authenticator import person
from configsync.auth.permissions import Caller, authorize_write
from configsync.auth.tokens import Claims
from configsync.configs.auth import ConfigAccess, expect_existing
from configsync.configs.commands import (
    PendingWrite,
    WriteResult,
    decide_and_record,
    streams_busy,
)
from configsync.configs.queries import (
    LOCK_AND_READ_COLUMNS,
    lock_params,
    write_state,
)
from configsync.db import UTCDateTime
from configsync.errors import ConfigSyncError


class Authorization:
    """Who asks to make a write, to be settled in its batch: a person's verified token
    (`claims`), or a caller already known (an API key from this process's cache)."""

    __slots__ = ("caller", "claims", "expected_version", "refusal")

    def __init__(
        self,
        *,
        claims: Claims | None = None,
        caller: Caller | None = None,
        expected_version: int | None = None,
        refusal: ConfigSyncError | None = None,
    ) -> None:
        if (claims is None) == (caller is None):
            raise ValueError("an authorization has either a token's claims or a caller")
        self.claims = claims
        # Set by the batch once the token's holder is read: the request log names it.
        self.caller = caller
        # The version the write names (If-Match or the body): with none, a write to a free
        # name creates the service; with one, it is answered 404 (expect_existing).
        self.expected_version = expected_version
        # What the request's own checks refused, raised once the caller is authorized.
        self.refusal = refusal


def authorize_and_record(
    session: Session, writes: Sequence[PendingWrite]
) -> list[WriteResult | Exception]:
    """The group commit's work: lock the writes' streams and read their states, each deferred
    writer's account and each service's owner, in one statement; settle the authorizations;
    then decide and record the writes authorized (commands.decide_and_record) against the
    states read. One outcome per write, in order. PostgreSQL only (as the group commit is)."""
    if all(w.authorization is None for w in writes):
        return decide_and_record(session, writes)
    outcomes: list[WriteResult | Exception | None] = [None] * len(writes)
    authorized = list(writes)
    with streams_busy(len(writes)):
        rows = session.connection().execute(_AUTHORIZE_LOCK_AND_READ, _params(writes)).all()
    for index, (write, row) in enumerate(zip(writes, rows, strict=True)):
        if write.authorization is None:
            continue
        try:
            authorized[index] = _authorized(session, write, row)
        except ConfigSyncError as refused:
            outcomes[index] = refused
    waiting = [index for index, outcome in enumerate(outcomes) if outcome is None]
    if waiting:
        decided = decide_and_record(
            session,
            [authorized[index] for index in waiting],
            [write_state(rows[index]) for index in waiting],
        )
        for index, outcome in zip(waiting, decided, strict=True):
            outcomes[index] = outcome
    return [outcome for outcome in outcomes if outcome is not None]


# configsync.configs.queries's lock_and_read and configsync.auth.service's holders, in one
# round trip: a batch's statements were five before its commit, each a round trip and each
# ~a tenth of the batch's CPU in the API. Migration 0017's function, whose plan the connection
# keeps (as text, the statement was parsed and planned for every batch). The locks are taken
# (and the states read after them) for the refused writes too, which changes nothing they see.
# The accounts and owners are read in the query's snapshot, taken before the locks, as when
# they had a statement of their own before lock_and_read.
_AUTHORIZE_LOCK_AND_READ = text(
    f"SELECT {LOCK_AND_READ_COLUMNS}, o_email AS email, o_role AS role,"
    " o_is_active AS is_active, o_token_generation AS token_generation, o_revoked AS revoked,"
    " o_service_name AS service_name, o_owner_id AS owner_id"
    " FROM configsync_authorize_lock_and_read(:namespace, :streams, :services, :environments,"
    " :users, :jtis)"
).columns(updated_at=UTCDateTime())


def _params(writes: Sequence[PendingWrite]) -> dict[str, Any]:
    return {
        **lock_params([(w.service, w.environment) for w in writes]),
        **service.holders_params([_asked(w) for w in writes]),
    }


def _asked(write: PendingWrite) -> tuple[str | None, str | None, str]:
    authorization = write.authorization
    if authorization is None:  # a caller read by its request: its row's account is not read
        return (None, None, write.service)
    assert isinstance(authorization, Authorization)
    claims = authorization.claims
    if claims is None:
        return (None, None, write.service)
    return (claims.user_id, claims.token_id or "", write.service)


def _authorized(session: Session, write: PendingWrite, row: Any) -> PendingWrite:
    """`write` made by its authorized caller, or the refusal its request would have had."""
    authorization = write.authorization
    assert isinstance(authorization, Authorization)
    if authorization.claims is not None:
        authorization.caller = person(
            authorization.claims, service.token_holder(authorization.claims, row)
        )
    caller = authorization.caller
    assert caller is not None
    exists, owner = row.service_name is not None, row.owner_id
    if not exists and row.service_exists:
        # Made between the statement's snapshot (the owner read: no service) and its locks
        # (the state read after them): the write is authorized against the service as it is,
        # not as a creator of one (rare: the owner costs a read of its own only here).
        exists, owner = service.service_owner(session, write.service)
    authorize_write(caller, write.service, write.environment, owner, exists)
    access = ConfigAccess(caller, write.service, write.environment, exists, owner)
    expect_existing(access, authorization.expected_version)
    if authorization.refusal is not None:
        raise authorization.refusal
    ctx = dataclasses.replace(write.ctx, actor=caller.actor(), service_existed=exists)
    return dataclasses.replace(write, ctx=ctx, authorization=None)
