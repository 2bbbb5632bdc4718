"""Password hashing: passlib with argon2."""

from __future__ import annotations

from passlib.context import CryptContext

from configsync.errors import InvalidInput

MIN_PASSWORD_BYTES = 8
MAX_PASSWORD_BYTES = 72

_context = CryptContext(schemes=["argon2"], deprecated="auto")
# Verified against when the email is unknown, so that a login for a missing account takes as
# long as one with a wrong password (no account enumeration by timing).
_DUMMY_HASH = _context.hash("configsync-no-such-user")


def check_password_rules(password: str) -> None:
    size = len(password.encode("utf-8"))
    if not MIN_PASSWORD_BYTES <= size <= MAX_PASSWORD_BYTES:
        raise InvalidInput(
            f"password must be {MIN_PASSWORD_BYTES} to {MAX_PASSWORD_BYTES} bytes long "
            f"(UTF-8); it is {size}"
        )


def hash_password(password: str) -> str:
    return _context.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    if password_hash is None:
        _context.verify(password, _DUMMY_HASH)
        return False
    try:
        return bool(_context.verify(password, password_hash))
    except (ValueError, TypeError):  # a malformed stored hash is a failed login, not a crash
        return False
