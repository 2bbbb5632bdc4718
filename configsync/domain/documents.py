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

import orjson
from deepdiff import DeepDiff

from configsync.domain.secrets import is_envelope, is_masked, replaced
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
    # Sealed and masked secrets are single values: DeepDiff sees each as one string, so it
    # neither reports their parts nor spends time walking them.
    atoms: dict[str, Any] = {}
    flat_old, flat_new = _atomized(old, atoms), _atomized(new, atoms)
    tree = DeepDiff(flat_old, flat_new, view="tree", threshold_to_diff_deeper=0, verbose_level=2)
    by_path: dict[tuple[str, ...], Change] = {}
    for report_type, levels in tree.items():
        for level in levels:
            path = level.path(output_format="list")
            _record(by_path, report_type, path, flat_old, flat_new)
    changes = [_restored(by_path[path], atoms) for path in sorted(by_path)]
    # deepdiff compares as Python does, so it cannot see some differences that JSON can
    # (-0.0 against 0.0, for one). The stored changes must rebuild `new` exactly: check, and fall
    # back to replacing the whole document if they do not.
    if not documents_equal(apply_changes(copy_document(old), changes), new):
        log.debug("deepdiff missed a difference; storing a whole-document replace")
        changes = [{"op": "replace", "path": [], "value": new, "old": old}]
    return changes


_ATOM = "\x00"  # no stored string holds NUL: a token cannot be mistaken for a value


def _atomized(value: Any, atoms: dict[str, Any]) -> Any:
    """`value` with each sealed or masked secret replaced by a string token standing for it
    (equal secrets, equal tokens)."""

    def token(secret: Any, _path: Any) -> str:
        name = _ATOM + orjson.dumps(secret, option=orjson.OPT_SORT_KEYS).decode()
        atoms[name] = secret
        return name

    return replaced(value, lambda node: is_envelope(node) or is_masked(node), token)


def _restored(value: Any, atoms: dict[str, Any]) -> Any:
    """The tokens in a change (or any value) replaced by the secrets they stand for."""
    if not atoms:
        return value
    if isinstance(value, str):
        return atoms.get(value, value) if value.startswith(_ATOM) else value
    if isinstance(value, dict):
        return {key: _restored(item, atoms) for key, item in value.items()}
    if isinstance(value, list):
        return [_restored(item, atoms) for item in value]
    return value


def _record(
    by_path: dict[tuple[str, ...], Change],
    report_type: str,
    path: list[Any],
    old: Document,
    new: Document,
) -> None:
    cut = _whole_value_at(path)
    if cut is not None:  # inside an array: the whole array is the value that changed
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


def _whole_value_at(path: list[Any]) -> int | None:
    """Where a change deep inside a value must stop: at an array (arrays are values)."""
    return next((i for i, part in enumerate(path) if isinstance(part, int)), None)


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
