"""The publication hook: hand every new checkpoint to something off the box — a command (the note on stdin)
and/or a URL (the note POSTed as ``text/plain``) — so a copy exists that the holder of the data directory
cannot rewrite.

A background thread of its own: tool calls never wait for it. It reads checkpoints from the database
(read-only), publishes each target's backlog oldest first, and keeps what each target has taken in
``<data_dir>/audit-published.json`` (tenant -> tree size), so a failure is retried — with a doubling delay up
to ``retry_max_s`` — and a restart resumes where it stopped. Failures are logged, never raised.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.audit import db

log = logging.getLogger(__name__)

BACKLOG_PER_ROUND = 100


@dataclass(frozen=True)
class PublishConfig:
    command: str | None = None  # split with shlex, run without a shell
    url: str | None = None
    timeout_s: float = 30.0
    retry_min_s: float = 1.0
    retry_max_s: float = 300.0

    @property
    def targets(self) -> list[str]:
        return [t for t, on in (("command", self.command), ("url", self.url)) if on]


def _read_state(state_path: Path) -> dict[str, Any]:
    """The state file as a dict; missing, unreadable or not a JSON object: empty."""
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def published_sizes(state_path: Path) -> dict[str, int]:
    """Per tenant, the largest tree size any target has taken (what exists off the box)."""
    sizes: dict[str, int] = {}
    for per_target in _read_state(state_path).values():
        for tenant, size in per_target.items() if isinstance(per_target, dict) else ():
            if isinstance(tenant, str) and isinstance(size, int):
                sizes[tenant] = max(size, sizes.get(tenant, 0))
    return sizes


class Publisher:
    """Publishes stored checkpoints to each configured target; ``wake`` after a checkpoint is written."""

    def __init__(self, config: PublishConfig, connect: Callable[[], Any], state_path: Path) -> None:
        self._config = config
        self._connect = connect
        self._state_path = state_path
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.published = 0
        self.failures = 0

    def start(self) -> None:
        if not self._config.targets:
            return
        self._thread = threading.Thread(target=self._run, name="audit-publish", daemon=True)
        self._thread.start()
        self._wake.set()  # whatever a previous run left unpublished

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self._thread = None

    def _load_state(self) -> dict[str, dict[str, int]]:
        return _read_state(self._state_path)

    def _save_state(self, state: dict[str, dict[str, int]]) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self._state_path)

    def _run(self) -> None:
        delay = self._config.retry_min_s
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                ok = self._round()
            except Exception:  # a bug or a locked database must not end publication for good
                log.exception("audit checkpoint publication failed")
                ok = False
            if ok:
                delay = self._config.retry_min_s
            else:
                self.failures += 1
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, self._config.retry_max_s)
                self._wake.set()

    def _round(self) -> bool:
        """Publish every target's backlog; False if some target failed (it is retried after a delay)."""
        state = self._load_state()
        conn = self._connect()
        try:
            tenants = db.checkpoint_tenants(conn)
            pending = {(target, tenant): db.checkpoints(conn, tenant, limit=BACKLOG_PER_ROUND,
                                                        after=state.get(target, {}).get(tenant, 0))
                       for target in self._config.targets for tenant in tenants}
        finally:
            conn.close()
        ok, more = True, False
        for (target, tenant), rows in pending.items():
            more = more or len(rows) == BACKLOG_PER_ROUND
            for row in rows:
                error = self._publish(target, tenant, row)
                if error is not None:
                    log.warning("audit checkpoint %s/%d not published to %s (will retry): %s",
                                tenant, row["tree_size"], target, error)
                    ok = False
                    break
                state.setdefault(target, {})[tenant] = row["tree_size"]
                self.published += 1
                try:
                    self._save_state(state)
                except OSError as exc:  # disk full: publishing again later is harmless
                    log.warning("audit publication state not saved: %s", exc)
        if ok and more:
            self._wake.set()
        return ok

    def _publish(self, target: str, tenant: str, row: dict[str, Any]) -> str | None:
        note: str = row["note"]
        if target == "command":
            assert self._config.command is not None
            # Not the server's environment: it holds provider keys the hook has no business seeing.
            env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ")}
            env |= {"OPENANALYST_AUDIT_TENANT": tenant, "OPENANALYST_AUDIT_TREE_SIZE": str(row["tree_size"])}
            try:
                done = subprocess.run(shlex.split(self._config.command), input=note.encode("utf-8"),
                                      capture_output=True, timeout=self._config.timeout_s, env=env, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return str(exc)
            if done.returncode != 0:
                return f"exit {done.returncode}: {done.stderr.decode('utf-8', 'replace')[-500:]}"
            return None
        assert self._config.url is not None
        request = urllib.request.Request(  # noqa: S310 (the owner's configured http(s) URL)
            self._config.url, data=note.encode("utf-8"), method="POST",
            headers={"Content-Type": "text/plain; charset=utf-8", "X-OpenAnalyst-Tenant": tenant})
        try:
            with urllib.request.urlopen(request, timeout=self._config.timeout_s) as response:  # noqa: S310
                status = int(response.status)
        except OSError as exc:  # URLError and HTTPError are OSErrors
            return str(exc)
        return None if 200 <= status < 300 else f"HTTP {status}"
