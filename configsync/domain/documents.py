"""Config documents: validation, merge patch, changes and their fold. Pure: no I/O.

One place computes changes (the store, the diff endpoint, compare and the audit summary all call
`compute_changes`) and one place folds them back (`apply_changes` / `fold`). Changes are plain
JSON operations:

    {"op": "add",     "path": ["a", "b"], "value": ...}
    {"op": "replace", "path": ["a", "b"], "value": ..., "old": ...}
    {"op": "remove",  "path": ["a", "b"], "old": ...}

Arrays are values: a change anywhere inside an array replaces the whole array (as JSON merge
patch treats them), so every path is a list of object keys and the operations of one change set
never overlap, which makes their order irrelevant to the fold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from configsync.domain.secrets import is_envelope, is_masked
from configsync.errors import DocumentTooLarge, InvalidDocument
from configsync.events.canonical import JSONValue, canonical_json

Document = dict[str, JSONValue]
Change = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int = 256 * 1024
    max_keys: int = 2000
    max_depth: int = 20


def validate_document(document: Any, limits: Limits) -> str:
    """Check a document against the rules and limits; return its canonical JSON."""
    if not isinstance(document, dict):
        raise InvalidDocument(
            f"a config document must be a JSON object, not {_json_type_name(document)}"
        )
    keys, depth = _count_keys_and_depth(document, limits.max_depth)
    if depth > limits.max_depth:
        raise InvalidDocument(f"document is nested more than {limits.max_depth} levels deep")
    if keys > limits.max_keys:
        raise InvalidDocument(f"document has {keys} keys; the limit is {limits.max_keys}")
    text = canonical_json(document)  # checks every value is plain JSON first
    size = len(text.encode("utf-8"))
    if size > limits.max_bytes:
        raise DocumentTooLarge(
            f"document is {size} bytes as JSON; the limit is {limits.max_bytes} bytes"
        )
    return text


def _count_keys_and_depth(document: Document, max_depth: int) -> tuple[int, int]:
    # Iterative, and stops descending past the limit: a 10,000-deep document costs nothing.
    keys = 0
    deepest = 0
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > max_depth:
            return keys, deepest
        if isinstance(node, dict):
            keys += len(node)
            stack.extend((c, depth + 1) for c in node.values() if isinstance(c, _CONTAINERS))
        elif isinstance(node, list):
            stack.extend((c, depth + 1) for c in node if isinstance(c, _CONTAINERS))
    return keys, deepest


_CONTAINERS = (dict, list)  # (a tuple: `dict | list` is a new union object at every call)


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def documents_equal(a: JSONValue, b: JSONValue) -> bool:
    """Equality as JSON sees it: 1, 1.0 and true are three different values, -0.0 is not 0.0.
    (Python's == save for those; compared in place, without serializing either side.)"""
    # Python's == only ever equates more (and JSON has no NaN): when it says two documents
    # differ, so does JSON, found in C without the walk. Every write asks this of its old and
    # new document, and most of them differ.
    if a != b:
        return False
    return _json_equal(a, b)


def _json_equal(a: JSONValue, b: JSONValue) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_json_equal(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return bool(a == b)


def copy_document(document: Document) -> Document:
    """A copy whose objects and arrays are new (strings and numbers are immutable: shared)."""
    copied: Document = _copied(document)
    return copied


def _copied(value: JSONValue) -> JSONValue:
    if isinstance(value, dict):
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copied(item) for item in value]
    return value


def merge_patch(target: JSONValue, patch: JSONValue) -> JSONValue:
    """RFC 7396 JSON Merge Patch: objects merge, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def compute_changes(old: Document, new: Document) -> list[Change]:
    """The operations that turn `old` into `new`, in a stable order (sorted by path); empty when
    they are equal.

    A walk of both documents' objects side by side: a key only in `new` is added, a key only
    in `old` removed, a key in both recursed into while both values are objects, and replaced
    where they are not and differ as JSON does (1, 1.0 and true are three values). Arrays,
    sealed and masked secrets are single values. (DeepDiff did this until its tree cost a fifth
    of a write's CPU; the property tests keep it as the independent check of this walk.)
    """
    changes: list[Change] = []
    _walk(old, new, [], changes)
    changes.sort(key=lambda change: change["path"])
    return changes


def _walk(old: Document, new: Document, path: list[str], out: list[Change]) -> None:
    for key, value in new.items():
        if key not in old:
            out.append({"op": "add", "path": [*path, key], "value": value})
            continue
        before = old[key]
        # Most keys of a write keep their value: a string, integer, boolean or null of the same
        # type and equal is unchanged as JSON sees it too (floats, -0.0 among them, and
        # containers go the long way).
        if type(before) is type(value) and type(value) in _PLAIN_SCALARS and before == value:
            continue
        if _is_object(before) and _is_object(value):
            _walk(before, value, [*path, key], out)
        elif not documents_equal(before, value):
            out.append({"op": "replace", "path": [*path, key], "value": value, "old": before})
    for key, value in old.items():
        if key not in new:
            out.append({"op": "remove", "path": [*path, key], "old": value})


_PLAIN_SCALARS = frozenset({str, int, bool, type(None)})


def _is_object(value: Any) -> bool:
    """An object whose keys are paths of the document (not a secret standing as one value)."""
    return isinstance(value, dict) and not is_envelope(value) and not is_masked(value)


def _get(document: JSONValue, path: Iterable[str]) -> JSONValue:
    node = document
    for part in path:
        node = node[part]
    return node


def apply_changes(document: Document, changes: Iterable[Mapping[str, Any]]) -> Document:
    """Apply stored operations to `document` (modified in place, and returned)."""
    for change in changes:
        path = change["path"]
        if not path:  # the whole document
            document = {} if change["op"] == "remove" else change["value"]
            continue
        parent = document
        for part in path[:-1]:
            parent = parent.setdefault(part, {})
        if change["op"] == "remove":
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = change["value"]
    return document


def applied(document: Document, changes: Iterable[Mapping[str, Any]]) -> Document:
    """`apply_changes` to a copy of `document`, which is left as it was: only the objects on
    the changes' paths are copied, the rest is shared (nobody changes a document in place). A
    write's next document touches a key or two of its config; the deep copy of the whole of it
    that `apply_changes(copy_document(...))` makes cost as much as the rest of the fold."""
    root = dict(document)
    copied = {id(root)}
    for change in changes:
        path = change["path"]
        if not path:  # the whole document (the change's value copied before a key is set)
            root = {} if change["op"] == "remove" else dict(change["value"])
            copied = {id(root)}
            continue
        parent: Any = root
        for part in path[:-1]:
            child: Any = parent.get(part)
            if child is None and part not in parent:
                child = parent[part] = {}
                copied.add(id(child))
            elif id(child) not in copied:
                child = parent[part] = dict(child)
                copied.add(id(child))
            parent = child
        if change["op"] == "remove":
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = change["value"]
    return root


@dataclass(frozen=True, slots=True)
class Folded:
    version: int
    document: Document
    deleted: bool


def fold(events: Iterable[Any]) -> Folded:
    """Rebuild a stream's state from its events (anything with `.version` and `.data`)."""
    document: Document = {}
    version = 0
    deleted = False
    for event in events:
        document = apply_changes(document, event.data["changes"])
        deleted = bool(event.data.get("deleted"))
        version = event.version
    return Folded(version=version, document=document, deleted=deleted)


def touches(changes: list[Change], key: list[str]) -> bool:
    """Whether changes set, replaced or removed `key` (a path), something inside it, or
    something that contains it (replacing a parent replaces the key too)."""
    for change in changes:
        path = change["path"]
        shorter = min(len(path), len(key))
        if path[:shorter] == key[:shorter]:
            return True
    return False


def parse_key(key: str) -> list[str]:
    """`a.b.c` → ["a", "b", "c"]; a key that holds a dot is written with a backslash: `a\\.b`."""
    parts: list[str] = []
    current = ""
    escaped = False
    for char in key:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ".":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    if not key or any(part == "" for part in parts):
        raise InvalidDocument("key must be a dotted path such as DATABASE.host")
    return parts
