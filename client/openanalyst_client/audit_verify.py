"""Offline verification of an audit export (log format 3, ``server/audit/FORMAT.md``), written again here
from the format document with the standard library and ``cryptography`` only, so a user checks the server's
log without trusting (or installing) the server's code.

Checked, in order: every record has exactly the fields of its version (``v`` 1: a call's ``started`` or
``finished``; ``v`` 2: an egress ``connection``, the only phase it may have), one tenant, ``seq`` 1, 2, 3, … with
no gap, ``hash`` = sha256 of the record's canonical JSON without ``hash``, ``prev_hash`` = the previous
record's hash (the tenant's genesis hash for seq 1); then the head: same tenant, ends at the last record's
seq and hash, its ``root`` is the RFC 6962 Merkle root over the records, and its Ed25519 ``sig`` verifies
under the server's public key. A filtered export is checked record by record, links only between
consecutive seqs. ``first_bad_seq`` is where the first check fails: everything before it is proven.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from openanalyst_client.errors import AuditVerificationError
from openanalyst_client.models import AuditKey, Verification

FIELDS = frozenset({"v", "seq", "ts", "tenant", "session_id", "call_id", "phase", "tool", "policy", "decision",
                    "reason", "input", "input_truncated", "input_sha256", "exit_code", "timed_out", "oom_killed",
                    "truncated", "limit", "duration_ms", "error_code", "error_message", "output",
                    "output_truncated", "output_sha256", "container_id", "image_id", "prev_hash", "hash"})
CONNECTION_VERSION = 2  # a connection record: one egress attempt through the tenant's proxy
CONNECTION_FIELDS = frozenset({"v", "seq", "ts", "tenant", "session_id", "call_id", "phase", "tool", "decision",
                               "reason", "started_at", "method", "host", "port", "address", "rule", "limit",
                               "error", "bytes_up", "bytes_down", "duration_ms", "throttled_ms", "prev_hash",
                               "hash"})


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def genesis_hash(tenant: str) -> str:
    return hashlib.sha256(("openanalyst-audit-v1:genesis:" + tenant).encode("utf-8")).hexdigest()


def record_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def merkle_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 Merkle tree hash over leaf hashes (already ``SHA-256(0x00 || data)``)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    level = leaves
    # Pairing left to right and carrying an odd last node up unchanged gives the same tree as the
    # "largest power of two below n" split of RFC 6962.
    while len(level) > 1:
        paired = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        level = paired + ([level[-1]] if len(level) % 2 else [])
    return level[0]


def public_key_from(key: AuditKey | bytes | str) -> Ed25519PublicKey:
    """The server's key: an ``AuditKey`` (``GET /v1/audit/key``), 32 raw bytes, or their base64."""
    if isinstance(key, AuditKey):
        key = key.public_key
    raw = base64.b64decode(key, validate=True) if isinstance(key, str) else key
    return Ed25519PublicKey.from_public_bytes(raw)


class _Chain:
    def __init__(self, partial: bool) -> None:
        self.partial = partial
        self.tenant: str | None = None
        self.records = 0
        self.last_seq = 0
        self.last_hash: str | None = None
        self.leaves: list[bytes] = []
        self.bad: tuple[int, str] | None = None

    def fail(self, seq: int, reason: str) -> None:
        if self.bad is None:
            self.bad = (seq, reason)

    def feed(self, record: Any) -> None:
        self.records += 1
        if self.bad is not None:
            return
        expected = self.last_seq + 1
        problem = self._problem(record, expected)
        if problem is not None:
            seq = record.get("seq") if isinstance(record, dict) else None
            self.fail(seq if self.partial and isinstance(seq, int) and seq >= expected else expected, problem)
            return
        self.last_seq, self.last_hash = record["seq"], record["hash"]
        self.leaves.append(hashlib.sha256(b"\x00" + bytes.fromhex(record["hash"])).digest())

    def _problem(self, record: Any, expected: int) -> str | None:
        if not isinstance(record, dict):
            return "not a JSON object"
        if record.get("v") not in (1, CONNECTION_VERSION):
            return f"unknown record version {record.get('v')!r}"
        fields = CONNECTION_FIELDS if record["v"] == CONNECTION_VERSION else FIELDS
        if set(record) != fields:
            return f"wrong fields (missing {sorted(fields - set(record))}, extra {sorted(set(record) - fields)})"
        if (record["phase"] == "connection") != (record["v"] == CONNECTION_VERSION):
            return f"phase {record['phase']!r} in a record of version {record['v']!r}"
        if self.tenant is None:
            self.tenant = record["tenant"]
            self.last_hash = genesis_hash(str(self.tenant))
        if record["tenant"] != self.tenant:
            return f"record of tenant {record['tenant']!r} in the chain of {self.tenant!r}"
        seq = record["seq"]
        if type(seq) is not int:
            return "seq is not an integer"
        if seq < expected or (seq > expected and not self.partial):
            return f"expected seq {expected}, found {seq}"
        try:
            if record["hash"] != record_hash(record):
                return "hash does not match the record's content"
        except ValueError:
            return "record cannot be canonicalised"
        if seq == expected and record["prev_hash"] != self.last_hash:
            return f"prev_hash does not match the hash of seq {seq - 1}"
        return None

    def finish(self, head: dict[str, Any] | None, key: Ed25519PublicKey) -> Verification:
        if self.bad is None:
            self._check_head(head, key)
        if self.bad is not None:
            return Verification(ok=False, records=self.records, first_bad_seq=self.bad[0], reason=self.bad[1])
        reason = ("filtered export: each record's hash checked, links only between consecutive seqs"
                  if self.partial else None)
        return Verification(ok=True, records=self.records, first_bad_seq=None, reason=reason)

    def _check_head(self, head: dict[str, Any] | None, key: Ed25519PublicKey) -> None:
        after = self.last_seq + 1
        if head is None:
            self.fail(after, "no signed head: the end of the chain cannot be checked")
            return
        tenant, seq, last_hash, root = head.get("tenant"), head.get("seq"), head.get("hash"), head.get("root")
        if not (isinstance(tenant, str) and type(seq) is int and isinstance(last_hash, str)
                and isinstance(root, str)) or head.get("v") != 2 or head.get("sig_alg") != "Ed25519":
            self.fail(after, "the head is not an Ed25519-signed v2 head")
            return
        if self.tenant is not None and tenant != self.tenant:
            self.fail(after, f"head of tenant {tenant!r} for the chain of {self.tenant!r}")
            return
        message = canonical_json({"type": "head", "v": 2, "tenant": tenant, "seq": seq, "hash": last_hash,
                                  "root": root})
        try:
            key.verify(base64.b64decode(str(head.get("sig", "")), validate=True), message)
        except (InvalidSignature, binascii.Error, ValueError):
            self.fail(after, "head signature invalid: not signed by this public key, or altered")
            return
        if seq < self.last_seq:
            self.fail(seq + 1, f"records after the signed head (seq {seq})")
        elif self.partial:
            return
        elif seq > self.last_seq:
            self.fail(after, f"chain ends at seq {self.last_seq} but the signed head is at seq {seq}: "
                             "records at the tail were removed")
        elif last_hash != (self.last_hash or genesis_hash(tenant)):
            self.fail(seq, f"seq {seq} differs from the signed head")
        elif root != base64.b64encode(merkle_root(self.leaves)).decode("ascii"):
            self.fail(1, "the records do not give the Merkle root in the signed head")


def verify_lines(lines: Iterable[str], key: AuditKey | bytes | str) -> Verification:
    """Verify an export given as its lines (``export`` line, records in seq order, ``head`` line)."""
    public = public_key_from(key)
    chain: _Chain | None = None
    head: dict[str, Any] | None = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj: Any = json.loads(line)
        except ValueError:
            if number == 1:
                raise AuditVerificationError("not an audit export: the first line is not JSON") from None
            obj = None
        kind = obj.get("type") if isinstance(obj, dict) else None
        if chain is None:
            chain = _Chain(partial=kind == "export" and bool(obj.get("filters")))
            if kind == "export":
                continue
        if head is not None:
            chain.records += 1
            chain.fail(chain.last_seq + 1, f"line {number}: data after the head line")
        elif kind == "head":
            head = obj
        else:
            chain.feed(obj)
    if chain is None:
        raise AuditVerificationError("not an audit export: the file is empty")
    return chain.finish(head, public)


def verify_export(path: str | Path, key: AuditKey | bytes | str) -> Verification:
    """Verify an export file written by ``audit.export`` (or ``GET /v1/audit/export``)."""
    with Path(path).open(encoding="utf-8") as lines:
        return verify_lines(lines, key)
