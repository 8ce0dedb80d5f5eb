"""Who the files the host writes into a workspace belong to, and with which modes.

A tenant's sessions each run as their own uid in group ``sandbox_gid`` with umask 002, in a ``2770``
workspace (docs/runner-trust.md): an uploaded file must be group-writable in that group for any session to
edit it. The owner's workspace is a person's directory: its files belong to the identity its tools run as.
"""

from __future__ import annotations

from dataclasses import dataclass

SETID_BITS = 0o7000  # setuid, setgid, sticky: never set by an upload


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    shared_group: bool  # a tenant's workspace: group write for every session uid

    @property
    def owner(self) -> tuple[int, int]:
        return self.uid, self.gid

    def file_mode(self, mode: int | None = None) -> int:
        """The mode of a new file: the archive's permission bits (0644 when none), set-id bits dropped."""
        base = 0o644 if mode is None else mode & 0o777
        return (base & 0o775) | 0o660 if self.shared_group else (base & 0o755) | 0o600

    def dir_mode(self) -> int:
        """A tenant's directories keep the workspace's setgid bit so new entries stay in its group."""
        return 0o2775 if self.shared_group else 0o755


__all__ = ["SETID_BITS", "Identity"]
