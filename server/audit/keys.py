"""The server's audit key: 32 random bytes, hex in ``<data_dir>/audit.key`` (mode 0600), made at first open.

Standard library only, so the offline verifier can read a key file the same way the server writes it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

KEY_BYTES = 32


class KeyFileError(ValueError):
    """The key file is missing, unreadable or not 64 hex characters."""


def load_key(path: Path) -> bytes:
    """The key in ``path`` (hex text, surrounding whitespace ignored)."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read audit key {path}: {exc}") from exc
    try:
        key = bytes.fromhex(text)
    except ValueError as exc:
        raise KeyFileError(f"audit key {path} is not hex") from exc
    if len(key) < 16:
        raise KeyFileError(f"audit key {path} is too short ({len(key)} bytes)")
    return key


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``, creating it (0600, exclusive create so two processes cannot race) if absent."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_key(path)
    try:
        os.write(fd, (secrets.token_hex(KEY_BYTES) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return load_key(path)
