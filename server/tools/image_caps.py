"""What the sandbox image can run (``pwsh``, ``node`` …), as its runner's ``hello`` frame says, kept per image
tag on disk so a restart knows it before a container starts: a re-adopted container's hello is replayed by
the host and carries no capabilities, and tools are offered before any container of a new server exists.

Tools that need a program get a probe (``program_probe``) answering why they cannot be offered: the image
lacks the program, or no runner of this image has said yet (unknown is not offered: a tool that fails every
call costs the model a turn).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from server.tools.registry import Probe

log = logging.getLogger(__name__)

KEEP_TAGS = 8  # older images' entries are dropped; a tag is a content hash, so entries never go stale


class CapsStore:
    """``{image tag: {program: bool}}`` in one small JSON file (0600), rewritten atomically."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._known: dict[str, dict[str, bool]] | None = None

    def _all(self) -> dict[str, dict[str, bool]]:
        if self._known is None:
            try:
                raw = json.loads(self._path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raw = {}
            except (OSError, ValueError) as exc:
                log.warning("ignoring unreadable %s: %s", self._path, exc)
                raw = {}
            self._known = {str(tag): {str(k): v is True for k, v in caps.items()}
                           for tag, caps in (raw.items() if isinstance(raw, dict) else ()) if isinstance(caps, dict)}
        return self._known

    def get(self, tag: str) -> dict[str, bool] | None:
        return self._all().get(tag)

    def put(self, tag: str, caps: dict[str, bool]) -> None:
        known = self._all()
        if known.get(tag) == caps:
            return
        known.pop(tag, None)
        known[tag] = dict(caps)
        for old in list(known)[:-KEEP_TAGS]:
            del known[old]
        tmp = self._path.with_name(self._path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(known, out)
            os.replace(tmp, self._path)
        except OSError as exc:  # the capabilities still hold in memory for this run
            log.warning("could not save the sandbox image's capabilities to %s: %s", self._path, exc)


def program_probe(caps: Callable[[], dict[str, bool] | None], program: str) -> Probe:
    """A probe for a tool that needs ``program`` in the image."""

    def probe(tenant_id: str) -> str | None:  # the same image for every tenant
        known = caps()
        if known is None:
            return (f"not known yet whether the sandbox image has {program}: no sandbox of this image has "
                    "started since it was built (start one, e.g. with any tool call, and ask again)")
        return None if known.get(program) else f"the sandbox image has no {program}"

    return probe
