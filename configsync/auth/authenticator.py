"""From request headers to a Caller: JWTs for people, API keys for services.

API keys are looked up by their SHA-256 in a per-process cache, so the hot read path needs no
database round trip; revocation reaches every process through the change feed.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from sqlalchemy.orm import Session

from configsync.auth import service, tokens
from configsync.auth.permissions import Caller
from configsync.auth.service import KEY_PREFIX, KeyRecord, hash_key
from configsync.auth.usage import KeyUsage
from configsync.cache import InvalidatingCache
from configsync.errors import Unauthorized
from configsync.settings import Settings

LEGACY_KEY_CALLER = Caller(kind="legacy_key", id="legacy", name="API_KEY", permission="read")


@dataclass(frozen=True, slots=True)
class Credentials:
    kind: str  # "key" | "jwt"
    value: str


def credentials(headers: object) -> Credentials | None:
    """What the request presents: X-API-Key, or Authorization: Bearer (a key or a JWT)."""
    get = headers.get  # type: ignore[attr-defined]
    key = get("x-api-key")
    if key:
        return Credentials("key", key.strip())
    authorization = get("authorization")
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("use 'Authorization: Bearer <token>' or 'X-API-Key: <key>'")
    return Credentials("key" if token.startswith(KEY_PREFIX) else "jwt", token)


class Authenticator:
    def __init__(self, settings: Settings, usage: KeyUsage | None = None) -> None:
        self._settings = settings
        self.usage = usage
        self._legacy_key = settings.legacy_api_key
        self.keys: InvalidatingCache[str, KeyRecord] = InvalidatingCache()

    def forget(self, key_hash: str) -> None:
        """Drop a key from this process's cache (it was revoked)."""
        self.keys.invalidate(key_hash)

    def _is_legacy(self, value: str) -> bool:
        return bool(self._legacy_key) and hmac.compare_digest(
            value.encode(), (self._legacy_key or "").encode()
        )

    def cached(self, creds: Credentials | None) -> Caller | None:
        """The caller, if it can be told without the database (API keys in the cache)."""
        if creds is None:
            return None
        if self._is_legacy(creds.value):
            return LEGACY_KEY_CALLER
        if creds.kind != "key":
            return None
        record = self.keys.get(hash_key(creds.value))
        if record is None:
            return None
        if not record.usable():
            raise Unauthorized("invalid, expired or revoked API key")
        if self.usage is not None:
            self.usage.seen(record.id)
        return record.caller()

    def resolve(
        self, session: Session, creds: Credentials | None, *, owner_of: str | None = None
    ) -> Caller:
        """The caller; for a person, the owner of the service `owner_of` is read in the same
        round trip (configsync.auth.service.token_user)."""
        if creds is None:
            raise Unauthorized("authentication required")
        if self._is_legacy(creds.value):
            return LEGACY_KEY_CALLER
        if creds.kind == "key":
            return self._resolve_key(session, creds.value)
        claims = self.claims(creds)
        return person(claims, service.token_user(session, claims, owner_of=owner_of))

    def claims(self, creds: Credentials) -> tokens.Claims:
        """A person's token, verified and unexpired (Unauthorized if not); whether it still
        stands is for the database to say (configsync.auth.service.token_holder)."""
        return tokens.decode(creds.value, key=self._settings.signing_key())

    def _resolve_key(self, session: Session, key: str) -> Caller:
        digest = hash_key(key)
        generation = self.keys.generation
        record = service.find_key(session, digest)
        if record is None:
            raise Unauthorized("invalid, expired or revoked API key")
        self.keys.fill(digest, record, generation)
        if not record.usable():
            raise Unauthorized("invalid, expired or revoked API key")
        if self.usage is not None:
            self.usage.seen(record.id)
        return record.caller()


def person(claims: tokens.Claims, holder: service.TokenHolder) -> Caller:
    """The caller a person's token speaks for. The role is the account's, read from the
    database, not the token's: a demotion takes effect at once."""
    return Caller(
        kind="user", id=holder.id, name=holder.email, role=holder.role, token_id=claims.token_id
    )
