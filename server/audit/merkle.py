"""RFC 6962 Merkle trees over a tenant's records: the incremental frontier, roots, and inclusion proofs.

Standard library only (the offline verifier uses it). Leaf ``i`` (0-based) is the record with ``seq = i + 1``;
its leaf data is the record's ``hash`` as 32 raw bytes, which already commits to every other field, so a proof
needs only stored hashes and a verifier recomputes it from the record itself:

    leaf = SHA-256(0x00 || bytes.fromhex(record["hash"]))      node = SHA-256(0x01 || left || right)

The root of the empty tree is SHA-256 of nothing. ``Frontier`` keeps the roots of the perfect subtrees that
make up ``[0, n)`` (one per set bit of ``n``, largest first), so appending a leaf costs O(1) amortised and a
root O(log n): the tool-call path never rereads the log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(record_hash_hex: str) -> bytes:
    return hashlib.sha256(b"\x00" + bytes.fromhex(record_hash_hex)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class Frontier:
    """The compact range ``[0, size)``: enough to append leaves and compute the root, nothing more."""

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != bin(size).count("1"):
            raise ValueError(f"a frontier of size {size} has {bin(size).count('1')} hashes, not {len(hashes)}")
        self.size = size
        self.hashes = list(hashes)

    def copy(self) -> Frontier:
        return Frontier(self.size, self.hashes)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash; merge equal-sized subtrees, as carrying in binary addition."""
        self.hashes.append(leaf)
        carry = self.size
        while carry & 1:
            right = self.hashes.pop()
            self.hashes[-1] = node_hash(self.hashes[-1], right)
            carry >>= 1
        self.size += 1

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        acc = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            acc = node_hash(left, acc)
        return acc

    def encode(self) -> str:
        """Storage form: the hashes in hex, concatenated."""
        return "".join(h.hex() for h in self.hashes)

    @classmethod
    def decode(cls, size: int, text: str) -> Frontier:
        raw = bytes.fromhex(text)
        return cls(size, [raw[i:i + 32] for i in range(0, len(raw), 32)])


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of RFC 6962, from leaf hashes."""
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    return frontier.root()


def inclusion_path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 6962 §2.1.1: the sibling hashes from the leaf up to the root."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf {index} is not in a tree of size {len(leaves)}")
    path: list[bytes] = []
    lo, hi = 0, len(leaves)
    while hi - lo > 1:  # walk down, collecting the sibling of each subtree holding the leaf
        k = _split(hi - lo)
        if index - lo < k:
            path.append(root_of(leaves[lo + k:hi]))
            hi = lo + k
        else:
            path.append(root_of(leaves[lo:lo + k]))
            lo += k
    path.reverse()
    return path


def root_from_path(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes | None:
    """The root an inclusion proof leads to (RFC 9162 §2.1.3.2), or None if the path has the wrong shape."""
    if not 0 <= index < size:
        return None
    fn, sn, acc = index, size - 1, leaf
    for sibling in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            acc = node_hash(sibling, acc)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            acc = node_hash(acc, sibling)
        fn >>= 1
        sn >>= 1
    return acc if sn == 0 else None
