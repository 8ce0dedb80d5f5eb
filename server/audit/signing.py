"""The server's Ed25519 audit key: made once in ``<data_dir>/audit-signing.key`` (PKCS#8 PEM, mode 0600), never
handed out. Everyone else gets the public key, as PEM, raw base64 or a C2SP/sumdb ``vkey`` line:

    <key name>+<key hash as 8 hex>+<base64(0x01 || 32-byte public key)>

``key hash`` = the first 4 bytes of SHA-256(key name || 0x0A || 0x01 || public key), the signed-note key id.
The offline verifier needs only this module's ``PublicKey`` and the ``cryptography`` package.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "Ed25519"
ED25519_TYPE = b"\x01"  # the signed-note algorithm byte for Ed25519
KEY_NAME_RE = re.compile(r"[^\s+]{1,200}")


class SigningKeyError(ValueError):
    """A key file is missing, unreadable or not an Ed25519 key in a form we read."""


def key_hash(name: str, raw_public: bytes) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n" + ED25519_TYPE + raw_public).digest()[:4]


@dataclass(frozen=True)
class PublicKey:
    """A verifier's trust anchor: the key and the name checkpoints are signed under."""

    raw: bytes
    name: str

    @property
    def key_id(self) -> str:
        """The signed-note key hash, 8 hex characters; also in every signed head."""
        return key_hash(self.name, self.raw).hex()

    @property
    def vkey(self) -> str:
        return f"{self.name}+{self.key_id}+{base64.b64encode(ED25519_TYPE + self.raw).decode('ascii')}"

    def pem(self) -> str:
        key = Ed25519PublicKey.from_public_bytes(self.raw)
        return key.public_bytes(serialization.Encoding.PEM,
                                serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def describe(self) -> dict[str, str]:
        return {"algorithm": ALGORITHM, "key_name": self.name, "key_id": self.key_id,
                "public_key": base64.b64encode(self.raw).decode("ascii"), "vkey": self.vkey,
                "public_key_pem": self.pem()}


class SigningKey:
    """The private half; lives only in the server process."""

    def __init__(self, private: Ed25519PrivateKey, name: str) -> None:
        if not KEY_NAME_RE.fullmatch(name):
            raise SigningKeyError(f"key name {name!r} must be non-empty, without spaces or '+'")
        self._private = private
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public = PublicKey(raw, name)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)


def load_or_create(path: Path, name: str) -> SigningKey:
    """The key in ``path``, made (0600, exclusive create so two processes cannot race) if absent."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        try:
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
    try:
        os.chmod(path, 0o600)
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SigningKeyError(f"cannot read the audit signing key {path}: {exc}") from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} is not an Ed25519 private key")
    return SigningKey(private, name)


def parse_vkey(text: str) -> PublicKey:
    name, _, rest = text.strip().partition("+")
    hash_hex, _, b64 = rest.partition("+")
    try:
        blob = base64.b64decode(b64, validate=True)
    except ValueError as exc:
        raise SigningKeyError("vkey: the key part is not base64") from exc
    if not name or len(blob) != 33 or blob[:1] != ED25519_TYPE:
        raise SigningKeyError("vkey: expected <name>+<hash>+<base64(0x01 || 32-byte Ed25519 key)>")
    key = PublicKey(blob[1:], name)
    if key.key_id != hash_hex.lower():
        raise SigningKeyError(f"vkey: key hash {hash_hex} does not match the key ({key.key_id})")
    return key


def load_public_key(path: Path, name: str | None = None) -> PublicKey:
    """A public key from the JSON of ``GET /v1/audit/key``, a vkey line, or a PEM file (with ``name``)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SigningKeyError(f"cannot read public key {path}: {exc}") from exc
    if text.startswith("{"):
        try:
            doc = json.loads(text)
            return parse_vkey(str(doc["vkey"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise SigningKeyError(f"{path}: not the JSON of GET /v1/audit/key ({exc})") from exc
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        except ValueError as exc:
            raise SigningKeyError(f"{path}: not a PEM public key ({exc})") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError(f"{path} is not an Ed25519 public key")
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return PublicKey(raw, name or "openanalyst-audit")
    return parse_vkey(text)
