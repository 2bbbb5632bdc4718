"""The cryptography of secrets: master keys, wrapping data keys, sealing and opening values.

AES-256-GCM throughout (`cryptography`'s AESGCM): a data key seals values, a master key wraps
data keys. Every ciphertext is bound to where it belongs by its associated data (a value to its
data key and path, a wrapped key to its id), so no ciphertext can be moved to another place and
still open. Fingerprints are HMAC-SHA-256, never a bare hash: without the key a fingerprint says
nothing about the value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from configsync.errors import ConfigurationError, SecretsUnavailable
from configsync.events.canonical import JSONValue, canonical_json, loads

KEY_BYTES = 32
NONCE_BYTES = 12
FINGERPRINT_CHARS = 16  # 64 bits of the HMAC: plenty to tell values apart, little to go on


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def new_master_key() -> str:
    """A new master key as CONFIGSYNC_MASTER_KEYS takes it: base64 of 32 random bytes."""
    return base64.b64encode(new_key()).decode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


@dataclass(frozen=True, slots=True)
class MasterKeys:
    """The keyring of master keys, newest first. Each key's id is derived from the key itself,
    so a keyring can be reordered or trimmed without renaming anything."""

    keys: tuple[tuple[str, bytes], ...]

    @classmethod
    def parse(cls, text: str) -> MasterKeys:
        """`CONFIGSYNC_MASTER_KEYS`: base64 keys separated by commas, newest first."""
        keys: list[tuple[str, bytes]] = []
        for number, item in enumerate(p.strip() for p in text.split(",") if p.strip()):
            try:
                key = _unb64(item)
            except (binascii.Error, ValueError):
                key = b""
            if len(key) != KEY_BYTES:
                raise ConfigurationError(
                    f"CONFIGSYNC_MASTER_KEYS: key {number + 1} is not base64 of 32 bytes; "
                    "`configsync keys new-master` prints one"
                )
            keys.append((master_key_id(key), key))
        if not keys:
            raise ConfigurationError("CONFIGSYNC_MASTER_KEYS holds no key")
        return cls(tuple(keys))

    @property
    def newest_id(self) -> str:
        return self.keys[0][0]

    def wrap(self, key_id: str, data_key: bytes) -> tuple[str, str]:
        """(master key id, wrapped key) under the newest master key."""
        master_id, master = self.keys[0]
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(master).encrypt(nonce, data_key, key_id.encode())
        return master_id, _b64(nonce + sealed)

    def unwrap(self, key_id: str, master_id: str, wrapped: str) -> bytes:
        master = dict(self.keys).get(master_id)
        if master is None:
            raise SecretsUnavailable(
                f"data key {key_id} is wrapped by master key {master_id}, which is not in "
                "CONFIGSYNC_MASTER_KEYS: add it back (after the newest), then run "
                "`configsync keys rotate`"
            )
        raw = _unb64(wrapped)
        try:
            return AESGCM(master).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise SecretsUnavailable(
                f"data key {key_id} does not open with its master key"
            ) from None


def master_key_id(key: bytes) -> str:
    return hashlib.sha256(b"configsync master key\0" + key).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class DataKey:
    id: str
    aead: AESGCM

    @classmethod
    def of(cls, key_id: str, key: bytes) -> DataKey:
        return cls(key_id, AESGCM(key))

    def seal(self, value: JSONValue, where: JSONValue) -> tuple[str, str]:
        """(nonce, ciphertext) of the value's canonical JSON, bound to this key and `where`."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self.aead.encrypt(nonce, canonical_json(value).encode(), self._aad(where))
        return _b64(nonce), _b64(sealed)

    def open(self, nonce: str, ciphertext: str, where: JSONValue) -> JSONValue:
        try:
            plain = self.aead.decrypt(_unb64(nonce), _unb64(ciphertext), self._aad(where))
        except InvalidTag:
            raise SecretsUnavailable(
                f"a value sealed under data key {self.id} does not open: it was altered or moved"
            ) from None
        if plain[:1] == b'"' and b"\\" not in plain:  # a plain string: most secrets
            return plain[1:-1].decode()
        return loads(plain)

    def _aad(self, where: JSONValue) -> bytes:
        # orjson: deterministic for a list of strings and integers, and a tenth of the cost.
        return orjson.dumps([self.id, where])


@dataclass(frozen=True, slots=True)
class Fingerprinter:
    """Keyed fingerprints of one service's values: equal values, equal fingerprints."""

    key: bytes

    @classmethod
    def for_service(cls, root: bytes, service: str) -> Fingerprinter:
        return cls(hmac.new(root, b"fingerprint\0" + service.encode(), hashlib.sha256).digest())

    def __call__(self, value: JSONValue) -> str:
        digest = hmac.new(self.key, canonical_json(value).encode(), hashlib.sha256).hexdigest()
        return digest[:FINGERPRINT_CHARS]
