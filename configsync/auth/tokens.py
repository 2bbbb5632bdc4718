"""JWT access tokens for people (python-jose, HS256, always decoded with HS256 pinned)."""

from __future__ import annotations

import functools
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from jose import JWTError, jwt

from configsync.db import utcnow
from configsync.errors import Unauthorized

ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: str
    role: str
    token_id: str
    generation: int = 0
    expires: int = 0  # `exp`: seconds since the epoch


def issue(
    user_id: str, role: str, *, key: str, minutes: int, generation: int = 0
) -> tuple[str, int]:
    """A signed token and its lifetime in seconds."""
    now = utcnow()
    lifetime = timedelta(minutes=minutes)
    claims = {
        "sub": user_id,
        "role": role,
        "iat": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
        "jti": uuid.uuid4().hex,
        "gen": generation,
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM), int(lifetime.total_seconds())


def decode(token: str, *, key: str) -> Claims:
    """The claims of a token signed with `key` that has not expired; Unauthorized if not."""
    claims = _verified(token, key)
    # As python-jose checks it: expired once `exp` is behind the current second.
    if claims.expires < int(time.time()):
        raise Unauthorized("invalid or expired token")
    return claims


# A token's signature and claims are the same at every use: verified once per token (HMAC,
# base64 and JSON are a tenth of a write's CPU), expiry checked at every use. Failures are not
# kept (lru_cache keeps only what returns).
@functools.lru_cache(maxsize=4096)
def _verified(token: str, key: str) -> Claims:
    try:
        # algorithms pinned: a token that names another algorithm (or "none") is refused.
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            options={"require_exp": True, "require_sub": True, "require_iat": True},
        )
    except JWTError:
        raise Unauthorized("invalid or expired token") from None
    user_id, role = claims.get("sub"), claims.get("role")
    if not isinstance(user_id, str) or not isinstance(role, str):
        raise Unauthorized("invalid or expired token")
    generation = claims.get("gen", 0)
    if not isinstance(generation, int):
        raise Unauthorized("invalid or expired token")
    return Claims(
        user_id=user_id,
        role=role,
        token_id=str(claims.get("jti", "")),
        generation=generation,
        expires=int(claims["exp"]),
    )
