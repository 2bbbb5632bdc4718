"""Login throttling: failed logins counted per account and per client address.

Counted with the `limits` library in a moving window: in Redis when REDIS_URL is set, so that
every API process shares the counts, in memory otherwise (embedded mode, one process). Only
failures count, so a person who types the right password is never slowed; once either count is
spent, every attempt (the right password included) is refused with 429 and Retry-After until the
window has moved on. If Redis cannot be reached the login goes ahead unthrottled (logged): the
throttle must not lock everybody out of a config store whose broker is down.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from configsync.errors import Throttled
from configsync.metrics import LOGIN_FAILURES, LOGIN_THROTTLED
from configsync.settings import Settings

log = logging.getLogger(__name__)


class LoginThrottle:
    def __init__(self, settings: Settings) -> None:
        self._storage = storage_from_string(settings.redis_url or "memory://")
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._limits: list[tuple[str, RateLimitItem]] = [
            ("account", parse(settings.login_failures_per_account)),
            ("address", parse(settings.login_failures_per_address)),
        ]

    def check(self, account: str, address: str) -> None:
        """Raise Throttled when either count is spent."""
        for kind, limit in self._limits:
            key = self._key(kind, account, address)
            try:
                allowed = self._limiter.test(limit, "configsync-login", key)
                if allowed:
                    continue
                reset, _ = self._limiter.get_window_stats(limit, "configsync-login", key)
            except Exception as exc:  # the shared counter is unreachable: fail open, loudly
                log.warning("login throttle unavailable (%s); not throttling", exc)
                return
            retry_after = max(1, math.ceil(reset - time.time()))
            LOGIN_THROTTLED.inc()
            raise Throttled(
                f"too many failed logins for this {kind}; try again in {retry_after} s",
                retry_after=retry_after,
            )

    def failed(self, account: str, address: str) -> None:
        LOGIN_FAILURES.inc()
        for kind, limit in self._limits:
            try:
                self._limiter.hit(limit, "configsync-login", self._key(kind, account, address))
            except Exception as exc:
                log.warning("login throttle unavailable (%s); failure not counted", exc)
                return

    @staticmethod
    def _key(kind: str, account: str, address: str) -> str:
        return f"{kind}:{account if kind == 'account' else address}"
