"""Secret values in config documents: which values are secret, how a sealed one looks, masking.

Pure: no keys, no I/O. Encryption is configsync.secrets's; this module says *where* secrets are
and what a reader who may not see one gets instead.

A secret value is stored in a document (and so in events, projections and the audit trail) as
an envelope, an object with one reserved key:

    {"$secret": "<data key id>:<nonce>:<ciphertext>:<fingerprint>"}

(one string: a key id holds no colon, base64 and hex none either; one string is also one node
for everything that walks documents, where the secret is one value.)

`f` is a keyed fingerprint of the plaintext (an HMAC under the installation's fingerprint key,
truncated): equal values of one service get equal fingerprints, so a reader of the history sees
that a secret changed, or differs between two environments, without learning it. Masking
replaces each envelope with `{"masked": true, "fingerprint": f}`; it needs no key, so the
worker, the audit trail and every rebuild mask exactly alike.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from configsync.errors import InvalidDocument
from configsync.events.canonical import JSONValue

ENVELOPE_KEY = "$secret"
DEFAULT_PATTERNS = ("*PASSWORD*", "*SECRET*", "*TOKEN*", "*_KEY", "*PRIVATE*", "*CREDENTIAL*")

# A path inside a document: object keys, and list indexes where the value sits in an array.
Path = tuple[str | int, ...]

# What the walks below descend into. A tuple, not `dict | list`: that expression builds a new
# union object each time it is evaluated, and isinstance checks it three times slower; every
# write walks its document several times, value by value.
_CONTAINERS = (dict, list)


@dataclass(frozen=True, slots=True)
class SecretRule:
    """Which values of a document are secret: keys whose name matches a pattern (any depth,
    case-insensitive), or whose path of object keys is one the service's owner declared."""

    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    declared: frozenset[tuple[str, ...]] = frozenset()

    def is_secret(self, name: str, keys: tuple[str, ...]) -> bool:
        return keys in self.declared or _secret_name(self.patterns, name)

    def paths(self, document: JSONValue) -> list[Path]:
        """The paths of the secret values of `document` (a secret's inside is not searched)."""
        found: list[Path] = []
        secret = _secret_names(self.patterns)
        declared = self.declared

        def walk(node: Any, path: Path, keys: tuple[str, ...]) -> None:
            if isinstance(node, dict):
                for name, value in node.items():
                    is_secret = secret.get(name)
                    if is_secret is None:
                        is_secret = _remember(secret, name, self.patterns)
                    if is_secret or (declared and (*keys, name) in declared):
                        found.append((*path, name))
                    elif isinstance(value, _CONTAINERS):
                        walk(value, (*path, name), (*keys, name))
            elif isinstance(node, list):
                for index, value in enumerate(node):
                    if isinstance(value, _CONTAINERS):
                        walk(value, (*path, index), keys)

        walk(document, (), ())
        return found


@functools.lru_cache(maxsize=64)
def _matcher(patterns: tuple[str, ...]) -> Callable[[str], re.Match[str] | None]:
    """The patterns as one compiled, case-insensitive expression (on every write's hot path)."""
    expression = "|".join(f"(?:{fnmatch.translate(p)})" for p in patterns) or "(?!)"
    return re.compile(expression, re.IGNORECASE | re.DOTALL).match


def _secret_name(patterns: tuple[str, ...], name: str) -> bool:
    names = _secret_names(patterns)
    found = names.get(name)
    return _remember(names, name, patterns) if found is None else found


# Key names repeat from one write to the next: each is matched once per set of patterns, then
# looked up in a plain dict (`SecretRule.paths` does so inline, for every key of every written
# document; an lru_cache keyed by (patterns, name) hashed the patterns' tuple again at each
# call). Bounded: past _NAMES_KEPT names a set starts afresh.
_NAMES: dict[tuple[str, ...], dict[str, bool]] = {}
_NAMES_KEPT = 100_000


def _secret_names(patterns: tuple[str, ...]) -> dict[str, bool]:
    names = _NAMES.get(patterns)
    if names is None:
        if len(_NAMES) >= 64:
            _NAMES.clear()
        names = _NAMES[patterns] = {}
    return names


def _remember(names: dict[str, bool], name: str, patterns: tuple[str, ...]) -> bool:
    if len(names) >= _NAMES_KEPT:
        names.clear()
    matched = names[name] = _matcher(patterns)(name) is not None
    return matched


def is_envelope(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and ENVELOPE_KEY in value


def is_masked(value: Any) -> bool:
    """A masked secret, as `masked` makes it."""
    return isinstance(value, dict) and value.get("masked") is True and "fingerprint" in value


@dataclass(frozen=True, slots=True)
class Sealed:
    key_id: str
    nonce: str
    ciphertext: str
    fingerprint: str

    def envelope(self) -> dict[str, str]:
        return {ENVELOPE_KEY: f"{self.key_id}:{self.nonce}:{self.ciphertext}:{self.fingerprint}"}


def envelope_parts(value: Mapping[str, Any]) -> Sealed:
    key, nonce, ciphertext, fingerprint = value[ENVELOPE_KEY].split(":")
    return Sealed(key, nonce, ciphertext, fingerprint)


def key_id(envelope: Mapping[str, Any]) -> str:
    return envelope_parts(envelope).key_id


def fingerprint(envelope: Mapping[str, Any]) -> str:
    return envelope_parts(envelope).fingerprint


def masked(envelope: Mapping[str, Any], *, destroyed: bool = False) -> dict[str, Any]:
    """What a reader who may not see a secret gets in its place."""
    out: dict[str, Any] = {"masked": True, "fingerprint": fingerprint(envelope)}
    if destroyed:
        out["destroyed"] = True
    return out


def mask(value: Any) -> Any:
    """`value` (a document, a change list, any JSON) with every envelope masked."""
    return replaced(value, is_envelope, lambda envelope, _path: masked(envelope))


def replaced(value: Any, matches: Callable[[Any], bool], by: Callable[[Any, Path], Any]) -> Any:
    """`value` with each object that `matches` (searched at any depth, not inside a match)
    replaced by `by(object, its path)`. Only containers holding a replacement are copied; the
    rest is shared with `value`, which is never changed (nobody changes a document in place)."""
    path: list[str | int] = []

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if matches(node):
                return by(node, tuple(path))
            items: Iterable[tuple[Any, Any]] = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            return node
        copy: Any = None
        for key, child in items:
            if isinstance(child, _CONTAINERS):
                path.append(key)
                new = walk(child)
                path.pop()
                if new is not child:
                    if copy is None:
                        copy = dict(node) if isinstance(node, dict) else list(node)
                    copy[key] = new
        return node if copy is None else copy

    return walk(value)


def envelopes(value: Any, path: Path = ()) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every envelope in `value`, with its path."""
    if is_envelope(value):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from envelopes(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from envelopes(v, (*path, i))


def key_ids(values: Iterable[Any]) -> set[str]:
    """The data keys that sealed any envelope in `values`."""
    return {key_id(envelope) for value in values for _, envelope in envelopes(value)}


def check_not_reserved(document: Any) -> None:
    """Refuse a written document that uses the envelope's reserved key anywhere: a reader could
    not tell such a value from a sealed secret."""
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if ENVELOPE_KEY in node:
                raise InvalidDocument(f"the key {ENVELOPE_KEY!r} is reserved for sealed secrets")
            stack.extend(v for v in node.values() if isinstance(v, _CONTAINERS))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, _CONTAINERS))


def get_path(document: Any, path: Path) -> Any:
    node = document
    for part in path:
        node = node[part]
    return node


def set_path(document: Any, path: Path, value: Any) -> None:
    parent = get_path(document, path[:-1])
    parent[path[-1]] = value


def lookup(document: Any, path: Path) -> tuple[bool, Any]:
    """(found, value) at `path`."""
    node = document
    for part in path:
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                return False, None
        elif not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node
