"""Canonical JSON: the one serialization that is stored and hashed.

Sorted keys, no whitespace, UTF-8, floats as Python's shortest round-tripping repr. Events keep
exactly this text in the database (not JSONB, which reorders keys and rewrites numbers such as
1.0, 1e2 and -0.0), so the hash chain can be recomputed from what the database gives back.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from configsync.errors import InvalidDocument

JSONValue = Any  # None | bool | int | float | str | list[JSONValue] | dict[str, JSONValue]


def canonical_json(value: JSONValue) -> str:
    """Serialize a JSON value canonically; refuse anything that is not plain JSON."""
    # Without floats (whose text orjson writes its own way: 1e16, not Python's 1e+16), in exact
    # dicts, lists, strings, integers, booleans and nulls, orjson writes exactly json.dumps's
    # text (sorted keys, no spaces, the same escapes), four to eight times faster; the property
    # tests hold it to json.dumps. An integer beyond 64 bits or a lone surrogate makes orjson
    # refuse: the standard library's path below then serializes or says what is wrong.
    if _floatless(value):
        try:
            text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
        except orjson.JSONEncodeError:
            pass
        else:
            if "\\u0000" not in text:
                return text
    # Serialized first, in C, and the text checked: what json.dumps refuses (NaN, infinities,
    # types it does not know) and what the text shows (U+0000, which it escapes; lone
    # surrogates, which UTF-8 cannot encode) send the value to check_json, which says what is
    # wrong. What json.dumps would quietly turn into JSON (non-string keys, tuples) is found by
    # `_plain_containers`, a walk of the containers only. Every write serializes its document;
    # check_json's walk of every value was 40% of it.
    try:
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError):
        check_json(value)  # words what is wrong; else json.dumps's own error stands
        raise
    if not (_plain_text(text) and _plain_containers(value)):
        check_json(value)
    return text


def _plain_text(text: str) -> bool:
    """No escaped U+0000 (or a string that looks like one) and no lone surrogate."""
    if "\\u0000" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _plain_containers(value: JSONValue) -> bool:
    """Every object's keys are exact strings and every array a list (no tuples), at any depth."""
    stack = [value]
    while stack:
        node = stack.pop()
        kind = type(node)
        if kind is dict:
            for key in node:
                if type(key) is not str:
                    return False
            stack.extend(child for child in node.values() if type(child) not in _SCALARS)
        elif kind is list:
            stack.extend(child for child in node if type(child) not in _SCALARS)
        elif isinstance(node, dict | list | tuple):
            return False  # a tuple, or a subclass: check_json decides
    return True


_SCALARS = frozenset({str, int, float, bool, type(None)})
_EXACT = frozenset({str, int, bool, type(None)})


def _floatless(value: JSONValue) -> bool:
    """Made only of dicts with string keys, lists, strings, integers, booleans and nulls (the
    exact types, not subclasses), with no float anywhere."""
    stack = [value]
    while stack:
        node = stack.pop()
        kind = type(node)
        if kind is dict:
            for key, child in node.items():
                if type(key) is not str:
                    return False
                if type(child) not in _EXACT:
                    stack.append(child)
        elif kind is list:
            stack.extend(child for child in node if type(child) not in _EXACT)
        elif kind not in _EXACT:
            return False
    return True


def loads(text: str | bytes) -> JSONValue:
    """The value of a JSON text, as json.loads gives it. orjson parses it three to four times
    faster (every write reads its config's current document under the stream lock; the worker
    reads every event); what orjson refuses and the standard library takes (an integer beyond
    64 bits, NaN or Infinity, a lone surrogate escaped) goes the standard library's way. The
    property tests hold the two to the same value, floats to the bit."""
    # orjson reads an integer beyond 64 bits as a float: a text with a run of 19 digits or more
    # anywhere (in a string too: the check is a translation in C, not a parse) is left to
    # json.loads. (A regular expression's search of a 4 KB text cost more than the parse.)
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if _LONG_RUN not in raw.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


# Every byte to a space but the ten digits, which become 0: a run of 19 zeros marks the digits.
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"0" * 19


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
