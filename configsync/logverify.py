"""Verify ConfigSync's log without trusting ConfigSync: this module is all an auditor must read.

It depends on the Python standard library and `cryptography` (Ed25519) only. It knows:

- the Merkle tree of RFC 9162 §2.1 (SHA-256; leaf prefix 0x00, node prefix 0x01) whose leaves
  are the events' chain hashes (32 bytes each), in position order;
- the hash chain: `hash = sha256(prev_hash + canonical_json(event fields))`, the first
  `prev_hash` being 64 zeros, so that the leaves can be recomputed from the events' contents;
- checkpoints in the C2SP `tlog-checkpoint` signed-note format: "<origin>\\n<size>\\n<base64
  root>\\n", then a blank line and "— <key name> <base64(4-byte key id + Ed25519 signature)>";
- verifier keys in the C2SP note form "<name>+<hex key id>+<base64(0x01 + public key)>";
- inclusion (§2.1.3.2) and consistency (§2.1.4.2) proof verification.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS = "0" * 64
ED25519 = b"\x01"  # the signature type byte of Ed25519 note keys


class VerificationError(Exception):
    """What is wrong, in words an auditor can act on."""


# --- the Merkle tree (RFC 9162 §2.1) --------------------------------------------------------


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of the leaves whose hashes are given, built bottom-up (the empty tree: SHA-256(""))."""
    if not leaf_hashes:
        return hashlib.sha256(b"").digest()
    # The right-edge subtrees of a tree of any size, kept as a stack of (size, hash): the same
    # tree as RFC 9162's recursive definition, in one pass.
    stack: list[tuple[int, bytes]] = []
    for digest in leaf_hashes:
        size, node = 1, digest
        while stack and stack[-1][0] == size:
            left_size, left = stack.pop()
            size, node = left_size + size, node_hash(left, node)
        stack.append((size, node))
    node = stack.pop()[1]
    while stack:
        node = node_hash(stack.pop()[1], node)
    return node


def verify_inclusion(
    index: int, tree_size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 §2.1.3.2; `leaf` is the leaf hash."""
    if index >= tree_size:
        raise VerificationError(f"position {index + 1} is not in a log of size {tree_size}")
    fn, sn, r = index, tree_size - 1, leaf
    for p in proof:
        if sn == 0:
            raise VerificationError("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not (fn & 1) and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0 or r != root:
        raise VerificationError(f"the event at position {index + 1} is not in that tree")


def verify_consistency(
    first_size: int, second_size: int, first: bytes, second: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2: the log of `second_size` extends the log of `first_size`."""
    if first_size > second_size:
        raise VerificationError(f"truncated: size {second_size} is below size {first_size}")
    if first_size == second_size:
        if proof or first != second:
            raise VerificationError(f"forked: two different logs of size {first_size}")
        return
    if first_size == 0:
        return
    path = list(proof)
    if first_size & (first_size - 1) == 0:
        path.insert(0, first)
    if not path:
        raise VerificationError("the consistency proof is empty")
    fn, sn = first_size - 1, second_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not (fn & 1) and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or fr != first or sr != second:
        raise VerificationError(
            f"not consistent: the log of size {second_size} does not extend the one of size "
            f"{first_size} (rewritten or forked)"
        )


# --- the hash chain ---------------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, event: dict[str, Any]) -> str:
    body = canonical_json(
        {
            "position": event["position"],
            "event_id": event["event_id"],
            "stream": event["stream"],
            "version": event["version"],
            "type": event["type"],
            "data": event["data"],
            "metadata": event["metadata"],
            "recorded_at": event["recorded_at"],
        }
    )
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def leaves_of(events: Iterable[dict[str, Any]]) -> list[bytes]:
    """Leaf hashes of exported events (`GET /v1/events` items), each checked against the chain.

    Raises VerificationError naming the first position that is missing, out of place, or whose
    content no longer gives the hash recorded for it (an edit that was not re-chained).
    """
    leaves: list[bytes] = []
    prev = GENESIS
    for expected, event in enumerate(events, start=1):
        if event["position"] != expected:
            raise VerificationError(
                f"rewritten from position {expected}: found position {event['position']} there"
            )
        if event["prev_hash"] != prev or chain_hash(prev, event) != event["hash"]:
            raise VerificationError(
                f"rewritten from position {expected}: its content no longer gives its hash"
            )
        prev = event["hash"]
        leaves.append(leaf_hash(bytes.fromhex(event["hash"])))
    return leaves


# --- keys and checkpoints (C2SP signed notes) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifierKey:
    name: str
    key_id: bytes
    public_key: Ed25519PublicKey


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public_key).digest()[:4]


def parse_verifier_key(text: str) -> VerifierKey:
    try:
        name, hex_id, encoded = text.strip().split("+", 2)
        raw = base64.b64decode(encoded, validate=True)
    except ValueError:
        raise VerificationError(
            "not a verifier key: expected <name>+<hex id>+<base64 key>"
        ) from None
    if raw[:1] != ED25519 or len(raw) != 33:
        raise VerificationError("the verifier key is not an Ed25519 key")
    if key_id(name, raw[1:]).hex() != hex_id:
        raise VerificationError("the verifier key's id does not match its name and key")
    return VerifierKey(name, bytes.fromhex(hex_id), Ed25519PublicKey.from_public_bytes(raw[1:]))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    note: str


def parse_checkpoint(note: str, key: VerifierKey, origin: str | None = None) -> Checkpoint:
    """A checkpoint whose signature by `key` verifies (and, if given, for `origin`)."""
    body, sep, signatures = note.partition("\n\n")
    if not sep:
        raise VerificationError("not a signed note: no blank line before the signatures")
    lines = body.split("\n")
    if len(lines) < 3:
        raise VerificationError("not a checkpoint: it needs an origin, a size and a root")
    text = body + "\n"
    for line in signatures.splitlines():
        dash, _, rest = line.partition(" ")
        name, _, encoded = rest.partition(" ")
        if dash != "\u2014" or name != key.name:
            continue
        try:
            raw = base64.b64decode(encoded, validate=True)
        except ValueError:
            continue
        if raw[:4] != key.key_id:
            continue
        try:
            key.public_key.verify(raw[4:], text.encode())
        except InvalidSignature:
            raise VerificationError("the checkpoint's signature does not verify") from None
        break
    else:
        raise VerificationError(f"the checkpoint is not signed by the key {key.name}")
    origin = origin or key.name  # a log's key is named after the log
    if lines[0] != origin:
        raise VerificationError(f"the checkpoint is for the log {lines[0]!r}, not {origin!r}")
    try:
        size, root = int(lines[1]), base64.b64decode(lines[2], validate=True)
    except ValueError:
        raise VerificationError("the checkpoint's size or root is malformed") from None
    return Checkpoint(lines[0], size, root, note)


def split_notes(text: str) -> list[str]:
    """The notes in a file that holds several (the checkpoint log: each followed by a blank
    line)."""
    notes: list[str] = []
    lines: list[str] = []
    signed = False  # past the blank line between a note's body and its signatures
    for line in text.splitlines():
        if line:
            lines.append(line)
        elif lines and not signed:
            lines.append(line)
            signed = True
        elif lines:
            notes.append("\n".join(lines) + "\n")
            lines, signed = [], False
    if lines:
        notes.append("\n".join(lines) + "\n")
    return notes


# --- the whole check --------------------------------------------------------------------------


def verify_log(checkpoints: Sequence[Checkpoint], leaves: Sequence[bytes]) -> str:
    """Every checkpoint an auditor holds against the whole log's leaves; names what is wrong."""
    ordered = sorted(checkpoints, key=lambda c: c.size)
    matching = 0
    for checkpoint in ordered:
        if checkpoint.size > len(leaves):
            raise VerificationError(
                f"truncated: the log has {len(leaves)} events, a checkpoint says {checkpoint.size}"
            )
        if root_of(leaves[: checkpoint.size]) != checkpoint.root:
            if matching == 0:
                raise VerificationError(
                    f"forked: the log's first {checkpoint.size} events are not the ones the "
                    f"checkpoint of size {checkpoint.size} signed"
                )
            where = (
                f"from position {checkpoint.size}"
                if checkpoint.size == matching + 1
                else f"from a position between {matching + 1} and {checkpoint.size}"
            )
            raise VerificationError(
                f"rewritten {where}: the checkpoint of size {matching} still matches, the one "
                f"of size {checkpoint.size} does not"
            )
        matching = checkpoint.size
    return f"ok: {len(leaves)} events; every checkpoint ({len(ordered)}) is a prefix of the log"
