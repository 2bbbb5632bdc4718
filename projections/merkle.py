"""The Merkle tree over the log (RFC 9162 §2.1): leaves are the events' chain hashes.

Kept incrementally, by the worker like any asynchronous projection: appending leaf n stores its
hash and the hash of every perfect subtree it completes (node (level L, index i) covers leaves
i·2^L .. (i+1)·2^L - 1), so nothing is ever recomputed and about 2n nodes are stored. Every
subtree a proof or a root needs, of any tree size up to the checkpoint, is made of at most
log2(n) of those perfect subtrees; a proof reads its few dozen nodes in one query.

The proof shapes and the hashing are configsync.logverify's (the auditor's module): one
definition of the tree on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import BigInteger, Integer, String, Table, delete, insert, select, tuple_
from sqlalchemy.orm import Mapped, Session, mapped_column

from configsync.db import Base
from configsync.errors import InvalidInput
from configsync.events import StoredEvent
from configsync.logverify import leaf_hash, node_hash
from projections.base import checkpoint

NAME = "merkle"

Block = tuple[int, int]  # (level, index): a perfect subtree


class MerkleNode(Base):
    __tablename__ = "merkle_nodes"

    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))  # hex


class MerkleProjection:
    """Every event is a leaf, whatever its type: the tree covers the whole log."""

    name = NAME
    handles = None  # every event type: the tree covers the whole log
    needs_payload = False  # positions and chain hashes only

    def apply(self, session: Session, events: Sequence[StoredEvent]) -> None:
        if not events:
            return
        size = events[0].position - 1  # leaves already in the tree (positions are gapless)
        frontier = _load(session, _frontier(size))
        rows: list[dict[str, object]] = []
        for event in events:
            index, level = size, 0
            node = leaf_hash(bytes.fromhex(event.hash))
            rows.append({"level": 0, "index": index, "hash": node.hex()})
            while index & 1:  # a right child: its parent is complete
                left = frontier.pop((level, index - 1))
                node = node_hash(left, node)
                index >>= 1
                level += 1
                rows.append({"level": level, "index": index, "hash": node.hex()})
            frontier[(level, index)] = node
            size += 1
        # A plain INSERT, many rows a statement: the runner's checkpoint lock means a node is
        # never written twice, and if that ever broke the primary key would say so loudly.
        table = MerkleNode.__table__
        assert isinstance(table, Table)
        session.connection().execute(insert(table), rows)

    def clear(self, session: Session) -> None:
        session.execute(delete(MerkleNode))


def _frontier(size: int) -> list[Block]:
    """The perfect subtrees on the right edge of a tree of `size` leaves, largest first."""
    blocks = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            blocks.append((level, start >> level))
            start += 1 << level
    return blocks


def _blocks(start: int, end: int) -> list[Block]:
    """The perfect subtrees that make up leaves [start, end), left to right."""
    blocks = []
    while start < end:
        level = (end - start).bit_length() - 1
        while start % (1 << level):
            level -= 1
        blocks.append((level, start >> level))
        start += 1 << level
    return blocks


def _load(session: Session, blocks: Sequence[Block]) -> dict[Block, bytes]:
    if not blocks:
        return {}
    rows = session.execute(
        select(MerkleNode.level, MerkleNode.index, MerkleNode.hash).where(
            tuple_(MerkleNode.level, MerkleNode.index).in_(list(set(blocks)))
        )
    )
    found = {(level, index): bytes.fromhex(digest) for level, index, digest in rows}
    missing = set(blocks) - found.keys()
    if missing:
        raise InvalidInput("the Merkle tree does not reach that far yet; try again shortly")
    return found


def _subtree(nodes: dict[Block, bytes], start: int, end: int) -> bytes:
    """MTH of leaves [start, end) from its perfect subtrees (RFC 9162's split, bottom-up)."""
    blocks = [nodes[b] for b in _blocks(start, end)]
    node = blocks.pop()
    while blocks:
        node = node_hash(blocks.pop(), node)
    return node


def _inclusion_ranges(m: int, start: int, end: int) -> list[tuple[int, int]]:
    """RFC 9162 §2.1.3.1 PATH(m, D[start:end]) as the leaf ranges of its hashes, leaf first."""
    ranges: list[tuple[int, int]] = []
    while end - start > 1:
        k = 1 << ((end - start - 1).bit_length() - 1)
        if m < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    return ranges[::-1]


def _consistency_ranges(m: int, n: int) -> list[tuple[int, int]]:
    """RFC 9162 §2.1.4.1 PROOF(m, D[0:n]) as the leaf ranges of its hashes."""
    ranges: list[tuple[int, int]] = []
    start, end, complete = 0, n, True
    while True:
        size = end - start
        if m - start == size:
            if not complete:
                ranges.append((start, end))
            break
        k = 1 << ((size - 1).bit_length() - 1)
        if m - start <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start, complete = start + k, False
    return ranges[::-1]


def tree_size(session: Session) -> int:
    """How many leaves the stored tree holds (the projection's checkpoint)."""
    return checkpoint(session, NAME)


def _checked(session: Session, size: int) -> None:
    if size < 1:
        raise InvalidInput("a tree size is 1 or more")
    held = tree_size(session)
    if size > held:
        raise InvalidInput(f"the tree holds {held} events so far; ask for a size up to that")


def root(session: Session, size: int) -> bytes:
    _checked(session, size)
    return _subtree(_load(session, _blocks(0, size)), 0, size)


def inclusion_proof(session: Session, position: int, size: int) -> list[bytes]:
    """The audit path of the event at `position` (1-based) in the tree of `size` events."""
    _checked(session, size)
    if not 1 <= position <= size:
        raise InvalidInput(f"position must be from 1 to the tree size ({size})")
    ranges = _inclusion_ranges(position - 1, 0, size)
    return _hashes(session, ranges)


def consistency_proof(session: Session, first: int, second: int) -> list[bytes]:
    """The proof that the tree of `second` events extends the one of `first` events."""
    _checked(session, second)
    if not 1 <= first <= second:
        raise InvalidInput(f"from must be from 1 to `to` ({second})")
    if first == second:
        return []
    return _hashes(session, _consistency_ranges(first, second))


def leaf(session: Session, position: int) -> bytes:
    """The leaf hash of the event at `position`."""
    return _load(session, [(0, position - 1)])[(0, position - 1)]


def _hashes(session: Session, ranges: list[tuple[int, int]]) -> list[bytes]:
    nodes = _load(session, [b for start, end in ranges for b in _blocks(start, end)])
    return [_subtree(nodes, start, end) for start, end in ranges]
