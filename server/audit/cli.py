"""Offline verification of an audit export: ``python -m server.audit.cli verify FILE [--key KEY]``.

Standard library only. The CLI engineer wires ``openanalyst audit verify FILE [--key KEY]`` to
``verify_file``. Exit codes: 0 the chain is intact (and, with ``--key``, its signed head checks out),
1 the export was tampered with or is incomplete, 2 the check could not be made (unreadable file or key,
or a key other than the one that signed the log).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from server.audit.keys import KeyFileError, load_verify_key
from server.audit.verify import Verdict, verify_lines

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


def verify_file(path: Path, key_path: Path | None = None, *, out: TextIO | None = None) -> int:
    """Verify the export at ``path`` (with the server key at ``key_path``, if given); print one line."""
    stream = out or sys.stdout
    try:
        key = load_verify_key(key_path) if key_path is not None else None
    except KeyFileError as exc:
        print(f"ERROR records=0 first_bad_seq=- tail=unauthenticated reason: {exc}", file=stream)
        return EXIT_ERROR
    try:
        verdict = verify_lines(_lines(path), key)
    except OSError as exc:
        print(f"ERROR records=0 first_bad_seq=- tail=unauthenticated reason: cannot read {path}: {exc}",
              file=stream)
        return EXIT_ERROR
    print(verdict_line(verdict), file=stream)
    if verdict.ok:
        return EXIT_OK
    return EXIT_ERROR if verdict.inconclusive else EXIT_BAD


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="openanalyst audit", description="Check an audit log export.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("verify", help="verify an export file (JSON Lines) offline")
    check.add_argument("file", type=Path)
    check.add_argument("--key", type=Path, default=None, help="the server's audit.key, to check the head")
    args = parser.parse_args(argv)
    return verify_file(args.file, args.key)


if __name__ == "__main__":
    sys.exit(main())
