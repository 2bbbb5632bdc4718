"""The vault: seals a document's secret values before its event is built, opens them for the
readers allowed to see them, destroys data key generations and re-wraps keys under a new master.

Data keys belong to a (service, environment) and a generation; new values are sealed under the
newest live generation. A key made by a write is inserted with that write's event, in the same
transaction (`Sealer.pending`, stored by configsync.configs.commands.record), so no event can
ever refer to a key that was not kept. Unwrapped keys are cached in the process; a destroyed one
is dropped from every process's cache (the change feed's KeysDestroyed).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from configsync.db import insert_missing_rows, utcnow
from configsync.domain.secrets import (
    DEFAULT_PATTERNS,
    Path,
    Sealed,
    SecretRule,
    envelope_parts,
    envelopes,
    is_envelope,
    lookup,
    masked,
    replaced,
)
from configsync.events.canonical import JSONValue, canonical_json
from configsync.secrets.crypto import DataKey, Fingerprinter, MasterKeys, new_key
from configsync.secrets.models import SecretKeyRow

FINGERPRINT_ROOT = "fingerprint-root"

Document = dict[str, Any]


def data_key_id(service: str, environment: str, generation: int) -> str:
    # Random beyond the generation: an id is never reused, even by a database restored from a
    # backup under a running process that still caches the key the id named before.
    return f"{service}/{environment}/{generation}-{secrets.token_hex(6)}"


class Vault:
    def __init__(self, master: MasterKeys, patterns: Iterable[str] = DEFAULT_PATTERNS) -> None:
        self.master = master
        self.patterns = tuple(patterns)
        self._keys: dict[str, DataKey | None] = {}  # None: destroyed
        self._root: bytes | None = None

    @classmethod
    def ephemeral(cls) -> Vault:
        """A vault with a master key of its own, kept nowhere: for benchmarks and tests."""
        from configsync.secrets.crypto import new_master_key

        return cls(MasterKeys.parse(new_master_key()))

    def rule(self, declared: Iterable[Iterable[str]] = ()) -> SecretRule:
        return SecretRule(self.patterns, frozenset(tuple(path) for path in declared))

    # --- keys ----------------------------------------------------------------------------------

    def key(self, session: Session, key_id: str) -> DataKey | None:
        """The data key `key_id`, or None if it was destroyed."""
        if key_id in self._keys:
            return self._keys[key_id]
        row = session.get(SecretKeyRow, key_id)
        if row is None:
            raise LookupError(f"data key {key_id} is not in secret_keys")
        key = None
        if row.wrapped is not None:
            key = DataKey.of(key_id, self.master.unwrap(key_id, row.master_key_id, row.wrapped))
        self._keys[key_id] = key
        return key

    def forget(self, key_ids: Iterable[str]) -> None:
        """Drop keys from this process's cache (they were destroyed, here or elsewhere)."""
        for key_id in key_ids:
            self._keys.pop(key_id, None)

    def _fingerprint_root(self, session: Session, pending: list[dict[str, Any]]) -> bytes:
        """The installation's fingerprint key, made by the first write that needs it.

        On PostgreSQL it is made in a short transaction of its own, so concurrent first writers
        all end up with the one that was kept. On SQLite the writer's own transaction holds the
        database's only write lock, so it is made there, with the write (`pending`): nobody
        else can be making one at the same time.
        """
        if self._root is not None:
            return self._root
        row = session.get(SecretKeyRow, FINGERPRINT_ROOT)
        if row is None and session.get_bind().dialect.name == "postgresql":
            made = self._row(FINGERPRINT_ROOT, "", "", 0, new_key())
            with _engine(session).begin() as conn:
                insert_missing_rows(conn, SecretKeyRow, [made], key=["id"])
            with Session(_engine(session)) as own:
                row = own.get(SecretKeyRow, FINGERPRINT_ROOT)
        if row is not None and row.wrapped is not None:
            self._root = self.master.unwrap(FINGERPRINT_ROOT, row.master_key_id, row.wrapped)
            return self._root
        root = new_key()
        pending.append(self._row(FINGERPRINT_ROOT, "", "", 0, root))
        return root  # cached once a later read finds it stored

    def _row(
        self, key_id: str, service: str, environment: str, generation: int, key: bytes
    ) -> dict[str, Any]:
        master_id, wrapped = self.master.wrap(key_id, key)
        return {
            "id": key_id,
            "service": service,
            "environment": environment,
            "generation": generation,
            "master_key_id": master_id,
            "wrapped": wrapped,
            "created_at": utcnow(),
            "destroyed_at": None,
        }

    def sealer(self, session: Session, service: str, environment: str) -> Sealer:
        return Sealer(self, session, service, environment)

    # --- reading -------------------------------------------------------------------------------

    def open(self, session: Session, document: Any) -> Any:
        """`document` with every sealed value opened; a value whose key was destroyed reads as
        masked and `"destroyed": true`. Containers holding a sealed value are new; the rest is
        shared with `document` (nobody changes a document in place)."""
        return replaced(
            document, is_envelope, lambda envelope, path: self.open_value(session, envelope, path)
        )

    def destroyed_paths(self, session: Session, document: Any) -> list[Path]:
        """Where `document` holds values whose data key was destroyed."""
        return [
            path
            for path, envelope in envelopes(document)
            if self.key(session, envelope_parts(envelope).key_id) is None
        ]

    def open_value(self, session: Session, envelope: dict[str, Any], path: Path) -> Any:
        parts = envelope_parts(envelope)
        key = self.key(session, parts.key_id)
        if key is None:
            return masked(envelope, destroyed=True)
        return key.open(parts.nonce, parts.ciphertext, list(path))

    # --- destroy and rotate --------------------------------------------------------------------

    def destroy(self, session: Session, key_ids: Iterable[str]) -> list[str]:
        """Empty the given data keys (in the caller's transaction); returns those destroyed."""
        ids = sorted(set(key_ids) - {FINGERPRINT_ROOT})
        if not ids:
            return []
        session.execute(
            update(SecretKeyRow)
            .where(SecretKeyRow.id.in_(ids), SecretKeyRow.wrapped.is_not(None))
            .values(wrapped=None, destroyed_at=utcnow())
        )
        self.forget(ids)
        return ids

    def rotate(self, session: Session) -> int:
        """Re-wrap every live key under the newest master key; returns how many were re-wrapped.
        Events are not touched: they hold values sealed by data keys, which do not change."""
        newest = self.master.newest_id
        rows = session.scalars(
            select(SecretKeyRow).where(
                SecretKeyRow.wrapped.is_not(None), SecretKeyRow.master_key_id != newest
            )
        ).all()
        for row in rows:
            assert row.wrapped is not None
            key = self.master.unwrap(row.id, row.master_key_id, row.wrapped)
            row.master_key_id, row.wrapped = self.master.wrap(row.id, key)
        session.flush()
        return len(rows)


@dataclass
class Sealer:
    """Seals the secret values of one write to one (service, environment).

    `pending` collects the key rows this write made; they must be stored with its event.
    """

    vault: Vault
    session: Session
    service: str
    environment: str
    pending: list[dict[str, Any]] = field(default_factory=list)
    _key: DataKey | None = None
    _sealed_before: Any = None  # the current document, as stored
    _fingerprint: Fingerprinter | None = None

    def seal(
        self, rule: SecretRule, new: Document, old_plain: Document, old_stored: Document
    ) -> Document:
        """`new` (plaintext) as it is stored: each secret value sealed. A secret whose value is
        the same as before, at the same path, keeps its envelope (so it shows no change)."""
        sealed: list[tuple[Path, Any]] = []
        self._sealed_before = old_stored
        for path in rule.paths(new):
            value = _get(new, path)
            had, before = lookup(old_plain, path)
            kept, envelope = lookup(old_stored, path)
            if had and kept and is_envelope(envelope) and _equal(before, value):
                sealed.append((path, envelope))
            else:
                sealed.append((path, self.envelope(value, path)))
        return _replaced(new, sealed)

    def reseal(self, rule: SecretRule, plain: Document, stored: Document) -> Document:
        """`plain` with every secret value sealed afresh under a new generation (destroy):
        what the rule names, and what was sealed before even if the rule no longer names it."""
        self._key = self._new_generation()
        wanted = [*rule.paths(plain), *(path for path, _ in envelopes(stored))]
        outermost: list[Path] = []
        for path in sorted(set(wanted), key=len):
            if not any(path[: len(kept)] == kept for kept in outermost):
                outermost.append(path)
        return _replaced(plain, [(p, self.envelope(_get(plain, p), p)) for p in outermost])

    def envelope(self, value: JSONValue, path: Path) -> dict[str, Any]:
        key = self._key or self._live_key()
        nonce, ciphertext = key.seal(value, list(path))
        return Sealed(key.id, nonce, ciphertext, self.fingerprint(value)).envelope()

    def fingerprint(self, value: JSONValue) -> str:
        if self._fingerprint is None:
            root = self.vault._fingerprint_root(self.session, self.pending)
            self._fingerprint = Fingerprinter.for_service(root, self.service)
        return self._fingerprint(value)

    def _live_key(self) -> DataKey:
        """The newest live generation of this config's data key (made if there is none).

        Every sealed value of the current document is under it: a destroy seals them all afresh
        under a new generation in the same transaction that ends the old ones, and the writer
        read that document under the stream lock. So the current document names it, and only a
        document with nothing sealed yet costs a query (under the same lock: a generation
        destroyed by another process is never used again).
        """
        for _, envelope in envelopes(self._sealed_before):
            key = self.vault.key(self.session, envelope_parts(envelope).key_id)
            if key is not None:
                self._key = key
                return key
        row = self.session.execute(
            select(SecretKeyRow.id, SecretKeyRow.wrapped)
            .where(
                SecretKeyRow.service == self.service,
                SecretKeyRow.environment == self.environment,
            )
            .order_by(SecretKeyRow.generation.desc())
            .limit(1)
        ).first()
        if row is not None and row.wrapped is not None:
            key = self.vault.key(self.session, row.id)
            if key is not None:
                self._key = key
                return key
        self._key = self._new_generation()
        return self._key

    def _new_generation(self) -> DataKey:
        latest = self.session.scalar(
            select(SecretKeyRow.generation)
            .where(
                SecretKeyRow.service == self.service,
                SecretKeyRow.environment == self.environment,
            )
            .order_by(SecretKeyRow.generation.desc())
            .limit(1)
        )
        generation = (latest or 0) + 1
        key_id = data_key_id(self.service, self.environment, generation)
        raw = new_key()
        self.pending.append(
            self.vault._row(key_id, self.service, self.environment, generation, raw)
        )
        return DataKey.of(key_id, raw)


def _engine(session: Session) -> Engine:
    bind = session.get_bind()
    return bind if isinstance(bind, Engine) else bind.engine


def _replaced(document: Document, values: list[tuple[Path, Any]]) -> Document:
    """`document` with the value at each path replaced: only the containers on those paths are
    copied; the rest is shared."""
    if not values:
        return document
    root = dict(document)
    copied = {id(root)}
    for path, value in values:
        node: Any = root
        for part in path[:-1]:
            child = node[part]
            if id(child) not in copied:
                child = dict(child) if isinstance(child, dict) else list(child)
                node[part] = child
                copied.add(id(child))
            node = child
        node[path[-1]] = value
    return root


def _get(document: Any, path: Path) -> Any:
    found, value = lookup(document, path)
    assert found
    return value


def _equal(a: Any, b: Any) -> bool:
    """Equal as JSON (1, 1.0 and true differ); strings, the usual secrets, compared directly."""
    if type(a) is str and type(b) is str:
        return a == b
    return canonical_json(a) == canonical_json(b)
