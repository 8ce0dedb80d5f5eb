"""Offline check of an inclusion proof (``openanalyst audit verify --proof FILE --public-key KEY``).

Standard library plus ``cryptography``. The proof holds: the record hashes to its ``hash``; the leaf
SHA-256(0x00 || hash) with the audit path leads to the checkpoint's root; the checkpoint is signed by the
public key, for the record's tenant, at the stated tree size.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from server.audit.merkle import leaf_hash, root_from_path
from server.audit.note import NoteError, verify_checkpoint
from server.audit.records import record_hash, record_problem
from server.audit.signing import PublicKey


def check_proof(doc: Any, key: PublicKey) -> str | None:
    """None if the proof holds, otherwise why not."""
    if not isinstance(doc, Mapping) or doc.get("type") != "inclusion_proof":
        return "not an inclusion proof document"
    record, note, path = doc.get("record"), doc.get("checkpoint"), doc.get("audit_path")
    if not isinstance(record, Mapping) or record_problem(record) is not None:
        return "the record is missing or has the wrong fields"
    if not isinstance(note, str) or not isinstance(path, list):
        return "the checkpoint or the audit path is missing"
    try:
        if record_hash(record) != record["hash"]:
            return "the record does not hash to its hash field: it was altered"
        siblings = [base64.b64decode(p, validate=True) for p in path]
        leaf = leaf_hash(record["hash"])
    except (ValueError, TypeError, binascii.Error):
        return "the record or the audit path cannot be decoded"
    try:
        checkpoint = verify_checkpoint(note, key)
    except NoteError as exc:
        return f"checkpoint rejected: {exc}"
    if checkpoint.tenant(key.name) != record["tenant"]:
        return f"the checkpoint's origin {checkpoint.origin!r} is not tenant {record['tenant']!r}'s log"
    seq = record["seq"]
    if not isinstance(seq, int) or doc.get("tree_size") != checkpoint.size:
        return "the proof's tree size is not the checkpoint's"
    if root_from_path(seq - 1, checkpoint.size, leaf, siblings) != checkpoint.root:
        return f"the audit path does not lead from record {seq} to the checkpoint's root"
    return None
