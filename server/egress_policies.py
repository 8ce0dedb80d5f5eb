"""A tenant's network rules change without a restart; everything else in its policy file needs one.

Policies are read and checked once at start (``policies.loader.policy_for``), where a bad file must stop the
server. After that, ``LivePolicies`` watches each policy *file* (not the shipped presets) by its stat
signature, at every lookup (a ``stat``, about a microsecond):

- a change to the ``[egress]`` table alone (allow/deny rules, presets, proxy limits) applies from the next
  lookup: the proxy asks for a tenant's rules at every connection, so the tenant's next call (and any
  connection opened after the change) is judged by the new rules, and ``GET /v1/sandbox`` shows them;
- any other change (``network`` itself: it decides the container's network and mounts; resources, tools,
  timeouts) is refused: the running policy stays whole, and the server logs once, naming the file and the
  fields, that a restart is needed;
- a file that no longer loads (a bad rule, bad TOML, gone) is refused the same way, naming the file and the
  field (the message ``PolicyError`` gives at start).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from policies.loader import PolicyError, load_policy, policy_for, preset_names
from policies.model import Policy

log = logging.getLogger(__name__)
LIVE_FIELDS = frozenset({"egress"})

Signature = tuple[int, int, int, int]


def _signature(path: str) -> Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


@dataclass
class _Watched:
    signature: Signature | None
    policy: Policy


class LivePolicies:
    """``policy(name_or_path)``: the policy as started, with its file's current ``[egress]`` table."""

    def __init__(self) -> None:
        self._watched: dict[str, _Watched] = {}
        self._paths: dict[str, str] = {}  # name -> the expanded path, made once (a Path per lookup cost ~5 us)
        self._presets = frozenset(preset_names())
        self._lock = threading.Lock()

    def policy(self, name_or_path: str) -> Policy:
        started = policy_for(name_or_path)  # cached; checked at start
        if name_or_path in self._presets:  # shipped with the server: never edited in place
            return started
        path = self._paths.get(name_or_path)
        if path is None:
            path = self._paths[name_or_path] = str(Path(name_or_path).expanduser())
        signature = _signature(path)
        with self._lock:
            watched = self._watched.get(name_or_path)
            if watched is None:  # first lookup: the file as it was read at start
                watched = self._watched[name_or_path] = _Watched(signature, started)
            if watched.signature == signature:
                return watched.policy
            watched.signature = signature  # judged once per version of the file
            watched.policy = self._judge(Path(path), started, watched.policy)
            return watched.policy

    @staticmethod
    def _judge(path: Path, started: Policy, running: Policy) -> Policy:
        try:
            edited = load_policy(path)
        except PolicyError as exc:
            log.error("policy file changed but not applied (the running policy is kept): %s", exc)
            return running
        changed = sorted(name for name in Policy.model_fields
                         if getattr(edited, name) != getattr(started, name) and name not in LIVE_FIELDS)
        if changed:
            log.error("policy file %s changed %s: a restart is needed to apply that (only the [egress] rules and "
                      "limits apply without one); the running policy is kept", path, ", ".join(changed))
            return running
        if edited.egress != running.egress:
            log.warning("policy file %s: new [egress] rules apply from the next connection", path)
        return started.model_copy(update={"egress": edited.egress})
