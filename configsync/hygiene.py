"""Input hygiene: what the database and Python cannot hold is refused before any query runs.

PostgreSQL's text cannot hold U+0000, UTF-8 cannot hold a lone surrogate, and an instant near
year 1 or 9999 may not survive the shift to UTC. Each arrives through a path, a query string,
a JSON or form body, or a timestamp parameter; each is refused here with a 422 that names
where it was. Duplicate keys in a JSON object are refused too: which one "wins" is a guess.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

from pydantic import AfterValidator

from configsync.errors import InvalidInput


def check_text(where: str, text: str) -> None:
    if "\x00" in text:
        raise InvalidInput(f"{where} contains a NUL character (U+0000), which cannot be stored")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{where} contains a lone surrogate: it is not valid Unicode") from None


def check_query(query_string: bytes) -> None:
    """Query parameters, as the application will decode them."""
    if b"%00" not in query_string and b"\x00" not in query_string:
        return  # the common case, checked without decoding
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        check_text("the name of a query parameter", name)
        check_text(f"query parameter {name!r}", value)


class BodyNotUTF8(InvalidInput):
    status_code = 400


# What a JSON text must contain for one of its strings to hold U+0000 or a lone surrogate: an
# escape (a raw NUL is not valid JSON, and UTF-8 cannot encode a surrogate). Without one, the
# walk over every string is skipped (it cost 13% of a PUT's CPU). `\\u0000` (an escaped
# backslash) matches too: the walk then finds nothing, as it should.
_RISKY_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
MALFORMED = object()  # check_json_body's answer for a body that is not JSON


def check_json_body(raw: bytes) -> Any:
    """A JSON body: UTF-8, no duplicate keys, no string the store cannot hold (keys included).
    Returns the value (as json.loads gives it), or MALFORMED.

    Malformed JSON is left to the endpoint, which says what it expected.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyNotUTF8(f"the body is not valid UTF-8 JSON: {exc.reason}") from None
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as duplicate:
        raise InvalidInput(
            f"the JSON body has the key {duplicate.key!r} twice in one object; send each key once"
        ) from None
    except RecursionError:
        raise InvalidInput("the JSON body is nested too deeply") from None
    except ValueError:
        return MALFORMED
    if _RISKY_ESCAPE.search(raw):
        _check_strings(value)
    return value


def check_form_body(raw: bytes) -> None:
    for name, value in parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True):
        check_text("the name of a form field", name)
        check_text(f"form field {name!r}", value)


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)  # in C; a key given twice leaves fewer entries than pairs
    if len(found) == len(pairs):
        return found
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)
    raise AssertionError("unreachable")


def _check_strings(value: Any) -> None:
    # Iterative, with the path of each string for the message: body.data.KEY.
    stack: list[tuple[Any, str]] = [(value, "body")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            check_text(where, item)
        elif isinstance(item, dict):
            for key, child in item.items():
                check_text(f"a key in {where}", key)
                stack.append((child, f"{where}.{_printable(key)}"))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))


def _printable(key: str) -> str:
    return key.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")


def to_utc(value: datetime) -> datetime:
    """An aware instant in UTC; refused when the shift takes it out of Python's range."""
    if value.tzinfo is None:
        return value  # the endpoint says it needs a time zone
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            "is outside the range of instants (0001-01-01 to 9999-12-31 in UTC)"
        ) from None


Instant = Annotated[datetime, AfterValidator(to_utc)]
