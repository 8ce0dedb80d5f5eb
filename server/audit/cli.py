"""Offline verification: ``python -m server.audit.cli verify …`` (also ``openanalyst audit verify …``).

    verify EXPORT --public-key KEY [--checkpoint NOTE]   an export (format v2), optionally against a checkpoint
    verify --proof PROOF --public-key KEY                one record's inclusion proof
    verify EXPORT --key KEY                              an old export (format v1, HMAC head)

``KEY`` for ``--public-key`` is the JSON of ``GET /v1/audit/key``, its ``vkey`` line, or its PEM. Standard
library plus ``cryptography``. Exit codes: 0 the check passed, 1 the export or proof was tampered with or is
incomplete, 2 the check could not be made (unreadable file or key, a key that does not apply).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from server.audit.keys import KeyFileError, load_verify_key
from server.audit.proofcheck import check_proof
from server.audit.signing import PublicKey, SigningKeyError, load_public_key
from server.audit.verify import Key, Verdict, verify_lines

EXIT_OK, EXIT_BAD, EXIT_ERROR = 0, 1, 2


def _lines(path: Path) -> Iterator[str]:
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        yield from handle


def verdict_line(verdict: Verdict) -> str:
    """One line a person can read and a script can grep: ``OK|TAMPERED|ERROR records=… first_bad_seq=… …``."""
    status = "OK" if verdict.ok else ("ERROR" if verdict.inconclusive else "TAMPERED")
    first = "-" if verdict.first_bad_seq is None else str(verdict.first_bad_seq)
    tail = "authenticated" if verdict.tail_authenticated else "unauthenticated"
    reason = verdict.reason or "chain intact and ends at the signed head"
    return f"{status} records={verdict.records} first_bad_seq={first} tail={tail} reason: {reason}"


def _error(stream: TextIO, message: str) -> int:
    print(f"ERROR records=0 first_bad_seq=- tail=unauthenticated reason: {message}", file=stream)
    return EXIT_ERROR


def verify_file(path: Path, key_path: Path | None = None, *, public_key: Path | None = None,
                checkpoint: Path | None = None, out: TextIO | None = None) -> int:
    """Verify the export at ``path`` with a public key (v2) or an HMAC key file (v1); print one line."""
    stream = out or sys.stdout
    key: Key | None = None
    try:
        if public_key is not None:
            key = load_public_key(public_key)
        elif key_path is not None:
            key = load_verify_key(key_path)
        note = checkpoint.read_text(encoding="utf-8") if checkpoint is not None else None
    except (KeyFileError, SigningKeyError, OSError, UnicodeDecodeError) as exc:
        return _error(stream, str(exc))
    try:
        verdict = verify_lines(_lines(path), key, note)
    except OSError as exc:
        return _error(stream, f"cannot read {path}: {exc}")
    print(verdict_line(verdict), file=stream)
    if verdict.ok:
        return EXIT_OK
    return EXIT_ERROR if verdict.inconclusive else EXIT_BAD


def verify_proof_file(path: Path, public_key: Path, *, out: TextIO | None = None) -> int:
    stream = out or sys.stdout
    try:
        key: PublicKey = load_public_key(public_key)
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (SigningKeyError, OSError, ValueError) as exc:
        return _error(stream, str(exc))
    problem = check_proof(doc, key)
    seq = doc.get("seq") if isinstance(doc, dict) else None
    if problem is not None:
        print(f"TAMPERED proof seq={seq} reason: {problem}", file=stream)
        return EXIT_BAD
    print(f"OK proof seq={seq} tree_size={doc['tree_size']} reason: record {seq} is in the signed checkpoint "
          f"of tenant {doc['record']['tenant']!r} at tree size {doc['tree_size']}", file=stream)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="openanalyst audit", description="Check an audit log export.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("verify", help="verify an export file (JSON Lines) or a proof offline")
    check.add_argument("file", type=Path, nargs="?", default=None, help="the export (JSON Lines)")
    check.add_argument("--public-key", type=Path, default=None,
                       help="the server's public key: JSON of GET /v1/audit/key, its vkey line, or PEM")
    check.add_argument("--checkpoint", type=Path, default=None,
                       help="a published checkpoint (signed note) the export must agree with")
    check.add_argument("--proof", type=Path, default=None, help="an inclusion proof from GET /v1/audit/proof")
    check.add_argument("--key", type=Path, default=None, help="format v1 exports only: an HMAC key file")
    args = parser.parse_args(argv)
    if args.proof is not None:
        if args.public_key is None:
            parser.error("--proof needs --public-key")
        return verify_proof_file(args.proof, args.public_key)
    if args.file is None:
        parser.error("give an export file, or --proof")
    return verify_file(args.file, args.key, public_key=args.public_key, checkpoint=args.checkpoint)


if __name__ == "__main__":
    sys.exit(main())
