"""Runner-wide facts (workspace, private temp dir, base environment) and per-session state.

A session owns: its long-lived shell (whose saved state, exported variables and cwd, lives in the runner's
private temp dir, never in the workspace), its background processes and its REPL. Every process a session started
carries a marker with the session's prefix, so closing the session can find and kill all of them.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from toolrunner.runner.paths import Workspace
from toolrunner.runner.procs import REGISTRY

if TYPE_CHECKING:
    from toolrunner.runner.bashshell import Shell
    from toolrunner.runner.repl import Repl
    from toolrunner.runner.shell import Background

_RUNNER_VARS = ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH")


@dataclass
class Runtime:
    """What every tool needs to know about where it runs."""

    workspace: Workspace
    tmp: str
    base_env: dict[str, str]
    caps: dict[str, Any]
    python: str

    @classmethod
    def create(cls, root: str) -> Runtime:
        tmp = tempfile.mkdtemp(prefix="openanalyst-runner-")
        env = {k: v for k, v in os.environ.items() if k not in _RUNNER_VARS and not k.startswith("OPENANALYST_")}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env.setdefault("HOME", tmp)
        env["PWD"] = os.path.realpath(root)
        caps = {name: shutil.which(name, path=env["PATH"]) is not None for name in ("bash", "node", "rg", "pwsh")}
        caps["python"] = True
        python = sys.executable or shutil.which("python3", path=env["PATH"]) or "python3"
        return cls(Workspace(root), tmp, env, caps, python)

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


_session_numbers = itertools.count(1)
# Markers carry this runner's own random id, so two runners' session prefixes never collide.
RUNNER_ID = secrets.token_hex(6)


@dataclass
class Session:
    """One agent session's shell state, background processes and REPL."""

    name: str
    runtime: Runtime
    number: int = field(default_factory=lambda: next(_session_numbers))
    background: dict[str, Background] = field(default_factory=dict)
    repl: Repl | None = None
    shell: Shell | None = None
    shell_lock: threading.Lock = field(default_factory=threading.Lock)  # one bash call at a time
    repl_lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def prefix(self) -> str:
        """Marker prefix of every process of this session."""
        return f"{RUNNER_ID}.s{self.number}."

    def token(self, kind: str) -> str:
        return f"{self.prefix}{kind}{next(self._counter)}"

    def close(self) -> None:
        """Stop everything the session started: background processes, the REPL, any leftover."""
        self.closed = True
        shell = self.shell
        if shell is not None:
            shell.kill()
            # The call on the shell (already cancelled) reaps it; wait for that, then tidy up ourselves.
            if self.shell_lock.acquire(timeout=10):
                try:
                    shell.reset()
                    shell.forget_state()
                finally:
                    self.shell_lock.release()
        for bg in list(self.background.values()):
            bg.kill()
        self.background.clear()
        if self.repl is not None:
            self.repl.stop()
            self.repl = None
        REGISTRY.kill_marked(self.prefix)
        REGISTRY.sweep()
