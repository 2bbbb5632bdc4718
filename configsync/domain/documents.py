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

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from deepdiff import DeepDiff

from configsync.domain.secrets import is_envelope, is_masked
from configsync.errors import DocumentTooLarge, InvalidDocument
from configsync.events.canonical import JSONValue, canonical_json, check_json, loads

log = logging.getLogger(__name__)

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
    check_json(document)
    text = canonical_json(document)
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
            stack.extend((child, depth + 1) for child in node.values() if _is_container(child))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if _is_container(child))
    return keys, deepest


def _is_container(value: Any) -> bool:
    return isinstance(value, dict | list)


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
    """Equality as JSON sees it: 1, 1.0 and true are three different values, -0.0 is not 0.0."""
    return canonical_json(a) == canonical_json(b)


def copy_document(document: Document) -> Document:
    copied: Document = loads(canonical_json(document))
    return copied


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
    """The operations that turn `old` into `new`, in a stable order; empty when they are equal."""
    if documents_equal(old, new):
        return []
    tree = DeepDiff(old, new, view="tree", threshold_to_diff_deeper=0, verbose_level=2)
    by_path: dict[tuple[str, ...], Change] = {}
    for report_type, levels in tree.items():
        for level in levels:
            path = level.path(output_format="list")
            _record(by_path, report_type, path, old, new)
    changes = [by_path[path] for path in sorted(by_path)]
    # deepdiff compares as Python does, so it cannot see some differences that JSON can
    # (-0.0 against 0.0, for one). The stored changes must rebuild `new` exactly: check, and fall
    # back to replacing the whole document if they do not.
    if not documents_equal(apply_changes(copy_document(old), changes), new):
        log.debug("deepdiff missed a difference; storing a whole-document replace")
        changes = [{"op": "replace", "path": [], "value": new, "old": old}]
    return changes


def _record(
    by_path: dict[tuple[str, ...], Change],
    report_type: str,
    path: list[Any],
    old: Document,
    new: Document,
) -> None:
    cut = _whole_value_at(path, old, new)
    if cut is not None:  # inside an array or a secret: the whole of it is what changed
        key = tuple(path[:cut])
        report_type = "values_changed"
    else:
        key = tuple(path)
    if any(key[:n] in by_path for n in range(len(key))):
        return  # an enclosing value is already replaced whole
    if report_type == "dictionary_item_added":
        by_path[key] = {"op": "add", "path": list(key), "value": _get(new, key)}
    elif report_type == "dictionary_item_removed":
        by_path[key] = {"op": "remove", "path": list(key), "old": _get(old, key)}
    else:
        by_path[key] = {
            "op": "replace",
            "path": list(key),
            "value": _get(new, key),
            "old": _get(old, key),
        }
    for other in [p for p in by_path if len(p) > len(key) and p[: len(key)] == key]:
        del by_path[other]


def _whole_value_at(path: list[Any], old: Document, new: Document) -> int | None:
    """Where a change deep inside a value must stop: at an array (arrays are values), or at a
    sealed or masked secret (one value: its parts mean nothing apart)."""
    for i, part in enumerate(path):
        if isinstance(part, int):
            return i
        if i + 1 < len(path) and (
            _is_atom(_find(old, path[: i + 1])) or _is_atom(_find(new, path[: i + 1]))
        ):
            return i + 1
    return None


def _is_atom(value: Any) -> bool:
    return is_envelope(value) or is_masked(value)


def _find(document: Any, path: list[Any]) -> Any:
    node = document
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


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
