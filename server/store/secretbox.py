"""Encryption at rest for stored provider keys: Fernet (AES-128-CBC + HMAC-SHA256) with a key file.

The key file ``<data_dir>/secret.key`` is created once with mode 0600 next to the 0600 database, so a copy of
the database alone (a backup, a leaked file) does not reveal the keys; the server's user can read both.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


class SecretBoxError(RuntimeError):
    """The key file is unreadable or does not match the stored secrets."""


class SecretBox:
    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        self._fernet = Fernet(self._load_or_create())

    def _load_or_create(self) -> bytes:
        try:
            fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = self.key_file.read_bytes().strip()
            if os.stat(self.key_file).st_mode & 0o077:
                os.chmod(self.key_file, 0o600)
            return key
        key = Fernet.generate_key()
        with os.fdopen(fd, "wb") as fh:
            fh.write(key + b"\n")
        return key

    def seal(self, plaintext: bytes) -> bytes:
        return self._fernet.encrypt(plaintext)

    def open(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken as exc:
            raise SecretBoxError(f"a stored secret cannot be decrypted with {self.key_file}") from exc
