"""Chain verification, shared by the server (``AuditLog.verify``) and the offline verifier (``cli.py``).

Standard library plus ``cryptography`` (for Ed25519): a researcher can run it with nothing else of the server.
A chain is good when every record has exactly the fields of its kind (``records.record_problem``), its
``hash`` matches its content, its ``seq`` is the next number and its ``prev_hash`` is the previous record's
hash — and when it ends exactly at the signed head, whose Merkle root is the root over the records. With a
published checkpoint, the first ``tree size`` records must also give the checkpoint's root. ``first_bad_seq``
is the first position (1, 2, …) at which that fails; records before it are proven, nothing after it is.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from server.audit.keys import AuditKey
from server.audit.merkle import Frontier, leaf_hash
from server.audit.note import NoteError, verify_checkpoint
from server.audit.records import (
    LOG_VERSION,
    genesis_hash,
    head_mac_for,
    head_message_v2,
    key_id,
    record_hash,
    record_problem,
)
from server.audit.signing import PublicKey

Key = PublicKey | AuditKey | bytes  # PublicKey: log format v2; AuditKey or bytes (server key): v1 HMAC


@dataclass
class Verdict:
    """The outcome; ``inconclusive`` means the check could not be made (e.g. the wrong key), not tampering."""

    ok: bool
    records: int
    first_bad_seq: int | None = None
    reason: str | None = None
    tail_authenticated: bool = False
    inconclusive: bool = False
    checkpoint_size: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "records": self.records, "first_bad_seq": self.first_bad_seq,
                "reason": self.reason}


class ChainVerifier:
    """Feed a tenant's records in order, then ``finish`` with the head; judging stops at the first fault."""

    def __init__(self, tenant: str | None = None, *, partial: bool = False, root_at: int | None = None) -> None:
        self.tenant = tenant
        self.partial = partial  # a filtered export: links are checked only between consecutive seqs
        self.records = 0
        self.last_seq = 0
        self.last_hash: str | None = None if tenant is None else genesis_hash(tenant)
        self.first_bad_seq: int | None = None
        self.reason: str | None = None
        self.inconclusive = False
        self.frontier = Frontier()
        self.root_at = root_at  # remember the Merkle root after this many records (a checkpoint's size)
        self.root_at_size: bytes | None = Frontier().root() if root_at == 0 else None

    @property
    def broken(self) -> bool:
        return self.first_bad_seq is not None

    def fail(self, seq: int, reason: str, *, inconclusive: bool = False) -> None:
        if self.first_bad_seq is None:
            self.first_bad_seq, self.reason, self.inconclusive = seq, reason, inconclusive

    def reject(self, reason: str) -> None:
        """Count a record that could not even be read, failing at its position."""
        self.records += 1
        self.fail(self.last_seq + 1, reason)

    def feed(self, record: Any) -> None:
        self.records += 1
        if self.broken:
            return
        expected = self.last_seq + 1
        problem = self._check(record, expected)
        if problem is not None:
            seq = record.get("seq") if isinstance(record, Mapping) else None
            # a filtered export has gaps by design: blame the record's own seq
            self.fail(seq if self.partial and isinstance(seq, int) and seq >= expected else expected, problem)
            return
        self.last_seq, self.last_hash = record["seq"], record["hash"]
        if not self.partial:
            self.frontier.append(leaf_hash(record["hash"]))
            if self.frontier.size == self.root_at:
                self.root_at_size = self.frontier.root()

    def _check(self, record: Any, expected: int) -> str | None:
        if not isinstance(record, Mapping):
            return "not a JSON object"
        shape = record_problem(record)
        if shape is not None:
            return shape
        if self.tenant is None and isinstance(record["tenant"], str):
            self.tenant = record["tenant"]
            self.last_hash = genesis_hash(self.tenant)
        if record["tenant"] != self.tenant:
            return f"record of tenant {record['tenant']!r} in the chain of {self.tenant!r}"
        seq = record["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool):
            return "seq is not an integer"
        if self.partial:
            if seq < expected:
                return f"seq {seq} out of order (after {self.last_seq})"
        elif seq > expected:
            return f"missing record(s): expected seq {expected}, found {seq}"
        elif seq != expected:
            return f"out of order: expected seq {expected}, found {seq}"
        try:
            recomputed = record_hash(record)
        except ValueError:  # NaN, lone surrogates: nothing the server writes
            return "record cannot be canonicalised (NaN or invalid Unicode)"
        if record["hash"] != recomputed:
            return "hash does not match the record's content"
        linked = not self.partial or seq == expected
        if linked and record["prev_hash"] != self.last_hash:
            return f"prev_hash does not match the hash of seq {seq - 1}"
        return None

    def finish(self, head: Mapping[str, Any] | None, key: Key | None) -> Verdict:
        """The verdict, checking that the chain ends at ``head`` and, given the key, the head's signature."""
        if not self.broken:
            self._check_head(head, key)
        ok = not self.broken
        tail_ok = ok and key is not None and head is not None
        reason = self.reason
        if ok and not tail_ok:
            reason = "chain intact; tail unauthenticated (no key given to check the head's signature)"
        if ok and self.partial:
            reason = "filtered export: each record's hash checked, links only between consecutive seqs"
        return Verdict(ok=ok, records=self.records, first_bad_seq=self.first_bad_seq, reason=reason,
                       tail_authenticated=tail_ok, inconclusive=self.inconclusive)

    def _check_head(self, head: Mapping[str, Any] | None, key: Key | None) -> None:
        after = self.last_seq + 1
        if head is None:
            if self.records or not self.partial:
                self.fail(after, "no signed head: the end of the chain cannot be checked")
            return
        seq, last_hash, tenant = head.get("seq"), head.get("hash"), head.get("tenant")
        if type(seq) is not int or not isinstance(last_hash, str) or not isinstance(tenant, str):
            self.fail(after, "malformed head")
            return
        if self.tenant is None:
            self.tenant, self.last_hash = tenant, genesis_hash(tenant)
        if tenant != self.tenant:
            self.fail(after, f"head of tenant {tenant!r} for the chain of {self.tenant!r}")
            return
        if key is not None and not self._signature_ok(head, key, tenant, seq, last_hash, after):
            return
        if self.partial:
            if seq < self.last_seq:
                self.fail(seq + 1, f"records after the signed head (seq {seq})")
            return
        if seq > self.last_seq:
            self.fail(after, f"chain ends at seq {self.last_seq} but the signed head is at seq {seq}: "
                             "records at the tail were removed")
        elif seq < self.last_seq:
            self.fail(seq + 1, f"records after the signed head (seq {seq})")
        elif last_hash != self.last_hash:
            self.fail(seq, f"seq {seq} differs from the signed head")
        elif head.get("v") == LOG_VERSION and head.get("root") != _b64(self.frontier.root()):
            self.fail(1, "the records do not give the Merkle root in the signed head")

    def _signature_ok(self, head: Mapping[str, Any], key: Key, tenant: str, seq: int, last_hash: str,
                      after: int) -> bool:
        if isinstance(key, PublicKey):
            return self._ed25519_ok(head, key, tenant, seq, last_hash, after)
        if head.get("v") == LOG_VERSION:
            self.fail(after, "this export's head is Ed25519-signed (format v2): check it with --public-key",
                      inconclusive=True)
            return False
        holder = key if isinstance(key, AuditKey) else AuditKey(key)
        signing = holder.for_tenant(tenant)
        given = head.get("key_id")
        if signing is None or (isinstance(given, str) and given != key_id(signing)):
            mine = f"tenant {holder.tenant!r}'s key" if signing is None else f"key {key_id(signing)}"
            self.fail(after, f"wrong key: the head was signed by key {given}, this is {mine}", inconclusive=True)
            return False
        mac = head.get("mac")
        if not isinstance(mac, str) or not hmac.compare_digest(mac, head_mac_for(signing, tenant, seq, last_hash)):
            self.fail(after, "head signature invalid: the head was forged or altered")
            return False
        return True

    def _ed25519_ok(self, head: Mapping[str, Any], key: PublicKey, tenant: str, seq: int, last_hash: str,
                    after: int) -> bool:
        if head.get("v") != LOG_VERSION or head.get("sig_alg") != "Ed25519":
            self.fail(after, "the head is not Ed25519-signed (a format v1 HMAC head can be re-made by anyone "
                             "who held the tenant key): not signed by this server's public key")
            return False
        root, sig = head.get("root"), head.get("sig")
        try:
            raw_sig = base64.b64decode(sig if isinstance(sig, str) else "", validate=True)
        except binascii.Error:
            raw_sig = b""
        if not isinstance(root, str) or not key.verify(raw_sig, head_message_v2(tenant, seq, last_hash, root)):
            given = head.get("key_id")
            who = f"signed by key id {given}, " if given != key.key_id else ""
            self.fail(after, f"head signature invalid: {who}not by the given public key {key.key_id}; "
                             "the head was forged, altered or re-signed")
            return False
        return True


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def check_checkpoint(verdict: Verdict, verifier: ChainVerifier, checkpoint_text: str, key: Key | None) -> Verdict:
    """Hold the export against a published checkpoint: its first ``size`` records must give its root."""
    def bad(reason: str, first: int | None = 1, inconclusive: bool = False) -> Verdict:
        return Verdict(ok=False, records=verdict.records, first_bad_seq=first, reason=reason,
                       tail_authenticated=False, inconclusive=inconclusive)

    if not isinstance(key, PublicKey):
        return bad("a checkpoint can only be checked with the server's public key (--public-key)", None, True)
    try:
        checkpoint = verify_checkpoint(checkpoint_text, key)
    except NoteError as exc:
        return bad(f"checkpoint rejected: {exc}", None, True)
    if verifier.tenant is not None and checkpoint.tenant(key.name) != verifier.tenant:
        return bad(f"the checkpoint's origin {checkpoint.origin!r} is not tenant {verifier.tenant!r}'s log",
                   None, True)
    if verifier.partial:
        return bad("a filtered export cannot be checked against a checkpoint; export everything", None, True)
    if verifier.broken:
        return verdict
    if verifier.last_seq < checkpoint.size:
        return bad(f"the export ends at seq {verifier.last_seq}, but the published checkpoint proves "
                   f"{checkpoint.size} records existed: records were removed", verifier.last_seq + 1)
    if verifier.root_at_size != checkpoint.root:
        return bad(f"records 1..{checkpoint.size} do not give the published checkpoint's root: a record at or "
                   f"before seq {checkpoint.size} was removed or changed after it was published")
    verdict.checkpoint_size = checkpoint.size
    if verdict.ok:
        verdict.reason = (f"chain intact, ends at the signed head, and records 1..{checkpoint.size} match the "
                          "published checkpoint")
    return verdict


def _peek_size(checkpoint_text: str | None) -> int | None:
    if checkpoint_text is None:
        return None
    lines = checkpoint_text.split("\n")
    return int(lines[1]) if len(lines) > 1 and lines[1].isdigit() else None


def verify_lines(lines: Iterable[str], key: Key | None = None, checkpoint: str | None = None) -> Verdict:
    """Verify an export, streaming: an optional ``{"type": "export", …}`` line, the records in seq order,
    then one ``{"type": "head", …}`` line. An export whose first line names filters is checked as partial.
    With ``checkpoint`` (a signed note's text), also hold the records against it."""
    verifier: ChainVerifier | None = None
    head: Mapping[str, Any] | None = None
    root_at = _peek_size(checkpoint)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj: Any = json.loads(line)
        except ValueError:
            obj = None
        kind = obj.get("type") if isinstance(obj, dict) else None
        if verifier is None:
            filtered = kind == "export" and bool(obj.get("filters"))
            verifier = ChainVerifier(partial=filtered, root_at=root_at)
            if kind == "export":
                continue
        if head is not None:
            verifier.reject(f"line {number}: data after the head line")
        elif kind == "head":
            head = obj
        elif obj is None:
            verifier.reject(f"line {number} is not JSON")
        else:
            verifier.feed(obj)
    verifier = verifier or ChainVerifier(root_at=root_at)
    verdict = verifier.finish(head, key)
    if checkpoint is not None:
        verdict = check_checkpoint(verdict, verifier, checkpoint, key)
    return verdict
