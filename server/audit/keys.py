"""Audit keys: the server key in ``<data_dir>/audit.key`` (32 random bytes as hex, mode 0600, made at first
open) and per-tenant key files derived from it.

A tenant key file is one line, ``tenant <tenant-id> <64 hex>``: it checks (and could forge) that tenant's
heads only, so a tenant's researchers can verify their exports offline without holding the server key.
Standard library only, so the offline verifier reads key files the same way the server writes them.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from server.audit.records import tenant_key

KEY_BYTES = 32


class KeyFileError(ValueError):
    """The key file is missing, unreadable or malformed."""


@dataclass(frozen=True)
class AuditKey:
    """A key a verifier holds: the server key (``tenant`` is None) or one tenant's derived key."""

    secret: bytes
    tenant: str | None = None

    def for_tenant(self, tenant: str) -> bytes | None:
        """The key that signs ``tenant``'s heads, or None if this key cannot check that tenant."""
        if self.tenant is None:
            return tenant_key(self.secret, tenant)
        return self.secret if self.tenant == tenant else None


def _hex_key(text: str, path: Path) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError as exc:
        raise KeyFileError(f"audit key {path} is not hex") from exc
    if len(key) < 16:
        raise KeyFileError(f"audit key {path} is too short ({len(key)} bytes)")
    return key


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read audit key {path}: {exc}") from exc


def load_key(path: Path) -> bytes:
    """The server key in ``path`` (hex text, surrounding whitespace ignored)."""
    return _hex_key(_read(path), path)


def load_verify_key(path: Path) -> AuditKey:
    """A server key file or a tenant key file, whichever ``path`` holds."""
    text = _read(path)
    if text.startswith("tenant "):
        tenant, _, hex_part = text.removeprefix("tenant ").rpartition(" ")
        if not tenant:
            raise KeyFileError(f"audit key {path}: expected 'tenant <tenant-id> <hex>'")
        return AuditKey(_hex_key(hex_part, path), tenant)
    return AuditKey(_hex_key(text, path))


def tenant_key_file(server_key: bytes, tenant: str) -> str:
    """The contents of ``tenant``'s key file."""
    return f"tenant {tenant} {tenant_key(server_key, tenant).hex()}\n"


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
