"""Names of services and environments: what the API, the keys and the store accept."""

from __future__ import annotations

import re

from configsync.errors import InvalidName

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
DEFAULT_ENVIRONMENT = "default"


def validate_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise InvalidName(
            f"invalid {kind} name {value!r}: use 1 to 63 characters from a-z, 0-9, '.', '_' "
            "and '-', starting with a letter or digit"
        )
    return value
