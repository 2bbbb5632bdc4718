"""Canonical JSON: the one serialization that is stored and hashed.

Sorted keys, no whitespace, UTF-8, floats as Python's shortest round-tripping repr. Events keep
exactly this text in the database (not JSONB, which reorders keys and rewrites numbers such as
1.0, 1e2 and -0.0), so the hash chain can be recomputed from what the database gives back.
"""

from __future__ import annotations

import json
import math
from typing import Any

from configsync.errors import InvalidDocument

JSONValue = Any  # None | bool | int | float | str | list[JSONValue] | dict[str, JSONValue]


def canonical_json(value: JSONValue) -> str:
    """Serialize a JSON value canonically; refuse anything that is not plain JSON."""
    check_json(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def loads(text: str | bytes) -> JSONValue:
    return json.loads(text)


def check_json(value: JSONValue) -> None:
    """Raise InvalidDocument unless `value` is made only of JSON types that store exactly.

    Refused: non-string keys, NaN and infinities, and strings that PostgreSQL's text type or
    UTF-8 cannot hold (U+0000, lone surrogates). Walks iteratively, so depth cannot blow the
    stack.
    """
    stack: list[JSONValue] = [value]
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, bool | int):
            continue
        if isinstance(item, str):
            _check_string(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidDocument("numbers must be finite (NaN and Infinity are not JSON)")
        elif isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise InvalidDocument("object keys must be strings")
                _check_string(key)
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
        else:
            raise InvalidDocument(f"{type(item).__name__} is not a JSON type")


def _check_string(text: str) -> None:
    if "\x00" in text:
        raise InvalidDocument("strings may not contain the NUL character (U+0000)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidDocument("strings must be valid Unicode (lone surrogate found)") from None
