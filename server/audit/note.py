"""Checkpoints in the C2SP tlog-checkpoint shape, as C2SP signed notes (https://c2sp.org/tlog-checkpoint,
https://c2sp.org/signed-note):

    <origin>\\n<tree size>\\n<base64 root hash>\\n\\n— <key name> <base64(key hash (4 bytes) || signature)>\\n

The Ed25519 signature covers the text up to and including the newline before the blank line. The origin of a
tenant's log is ``<key name>/<tenant>``, so one server key signs every tenant's checkpoints and no checkpoint
can pass as another tenant's.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from server.audit.signing import PublicKey, SigningKey, key_hash

DASH = "\u2014"


class NoteError(ValueError):
    """The text is not a checkpoint signed note."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode('ascii')}\n"

    def tenant(self, key_name: str) -> str | None:
        """The tenant whose log this is, if the origin is ``<key_name>/<tenant>``."""
        prefix = key_name + "/"
        return self.origin[len(prefix):] if self.origin.startswith(prefix) else None


def origin_for(key_name: str, tenant: str) -> str:
    return f"{key_name}/{tenant}"


def sign_note(text: str, key: SigningKey) -> str:
    """``text`` (lines ending in a newline) as a signed note with one Ed25519 signature line."""
    sig = key_hash(key.public.name, key.public.raw) + key.sign(text.encode("utf-8"))
    return f"{text}\n{DASH} {key.public.name} {base64.b64encode(sig).decode('ascii')}\n"


def sign_checkpoint(checkpoint: Checkpoint, key: SigningKey) -> str:
    """The signed note's full text."""
    return sign_note(checkpoint.body(), key)


def parse_checkpoint(text: str) -> tuple[Checkpoint, str, list[tuple[str, bytes]]]:
    """The checkpoint, the signed body text and the (key name, signature blob) lines; raises ``NoteError``."""
    body, sep, sigs = text.partition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise NoteError("a signed note is text, a blank line, then signature lines ending in a newline")
    lines = body.split("\n")
    if len(lines) < 3:
        raise NoteError("a checkpoint has an origin, a tree size and a root hash")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not size_text.isdigit() or (size_text.startswith("0") and size_text != "0"):
        raise NoteError(f"tree size {size_text!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error as exc:
        raise NoteError("the root hash is not base64") from exc
    if len(root) != 32 or not origin:
        raise NoteError("the origin is empty or the root hash is not 32 bytes")
    signatures: list[tuple[str, bytes]] = []
    for line in sigs[:-1].split("\n"):
        dash, _, rest = line.partition(" ")
        name, _, blob_text = rest.rpartition(" ")
        if dash != DASH or not name:
            raise NoteError(f"not a signature line: {line[:80]!r}")
        try:
            blob = base64.b64decode(blob_text, validate=True)
        except binascii.Error as exc:
            raise NoteError("a signature is not base64") from exc
        signatures.append((name, blob))
    return Checkpoint(origin, int(size_text), root), body + "\n", signatures


def verify_checkpoint(text: str, key: PublicKey) -> Checkpoint:
    """The checkpoint if one of its signatures is ``key``'s and verifies; raises ``NoteError`` otherwise."""
    checkpoint, body, signatures = parse_checkpoint(text)
    for name, blob in signatures:
        if len(blob) == 68 and blob[:4] == key_hash(name, key.raw) and key.verify(blob[4:], body.encode()):
            return checkpoint
    raise NoteError("no signature on this checkpoint verifies with the given public key")
