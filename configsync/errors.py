"""The error types of the domain, each carrying the HTTP status it maps to.

The API has one handler that turns any of these into `{"detail": ...}` with its status; the CLI
prints the message. Nothing here knows about HTTP beyond the number.
"""

from __future__ import annotations

from typing import Any


class ConfigSyncError(Exception):
    status_code = 400
    headers: dict[str, str] = {}

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class ConfigurationError(ConfigSyncError):
    """The process is set up wrongly (a missing secret, a bad URL): refuse to start."""

    status_code = 500


class InvalidInput(ConfigSyncError):
    status_code = 422


class InvalidName(InvalidInput):
    pass


class InvalidDocument(InvalidInput):
    pass


class DocumentTooLarge(ConfigSyncError):
    status_code = 413


class NotFound(ConfigSyncError):
    status_code = 404


class Deleted(NotFound):
    """The config existed and was deleted; the answer says at which version."""

    def __init__(self, detail: str, deleted_at_version: int) -> None:
        super().__init__(detail, deleted_at_version=deleted_at_version)
        self.deleted_at_version = deleted_at_version


class Unauthorized(ConfigSyncError):
    status_code = 401


class Forbidden(ConfigSyncError):
    status_code = 403


class AlreadyExists(ConfigSyncError):
    status_code = 409


class AlreadyRegistered(ConfigSyncError):
    """A taken username or email at the original implementation's /auth/register, which answered
    400 where the rest of the API answers 409."""

    status_code = 400


class VersionConflict(ConfigSyncError):
    """The stream is not at the version the writer expected.

    The store raises it; the HTTP layer answers 412 when the caller stated the version it expected
    (If-Match or expected_version).
    """

    status_code = 412

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        super().__init__(
            f"version conflict on {stream}: expected version {expected}, "
            f"but the current version is {actual}",
            expected_version=expected,
            current_version=actual,
        )
        self.stream = stream
        self.expected = expected
        self.actual = actual


class ServiceUnavailable(ConfigSyncError):
    status_code = 503


class SecretsUnavailable(ServiceUnavailable):
    """A sealed value cannot be opened: the master key that wrapped its data key is not set."""


class Throttled(ConfigSyncError):
    """Too many attempts: try again after `retry_after` seconds."""

    status_code = 429

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.headers = {"Retry-After": str(retry_after)}
