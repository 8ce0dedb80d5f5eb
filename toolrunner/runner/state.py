"""Runner-wide facts (workspace, private temp dir, base environment) and per-session state.

A session owns: the saved shell state (exported variables and cwd, kept in the runner's memory, never in the
workspace), its background processes and its REPL. Every process a session started
carries a marker with the session's prefix, so closing the session can find and kill all of them.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from toolrunner.runner.paths import Workspace
from toolrunner.runner.procs import REGISTRY

if TYPE_CHECKING:
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


@dataclass
class Session:
    """One agent session's shell state, background processes and REPL."""

    name: str
    runtime: Runtime
    number: int = field(default_factory=lambda: next(_session_numbers))
    background: dict[str, Background] = field(default_factory=dict)
    repl: Repl | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    repl_lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False
    env_script: str = ""  # `export -p` of the shell as the last completed call left it
    prelude_for: str = ""  # the env_script the BASH_ENV file on disk was written for
    shell_cwd: str = ""
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def prefix(self) -> str:
        """Marker prefix of every process of this session."""
        return f"s{self.number}."

    def token(self, kind: str) -> str:
        return f"{self.prefix}{kind}{next(self._counter)}"

    def cwd(self) -> str:
        """The shell's saved working directory if it still exists, else the workspace root."""
        cwd = self.shell_cwd
        return cwd if cwd and os.path.isdir(cwd) else self.runtime.workspace.root

    def close(self) -> None:
        """Stop everything the session started: background processes, the REPL, any leftover."""
        self.closed = True
        for bg in list(self.background.values()):
            bg.kill()
        self.background.clear()
        if self.repl is not None:
            self.repl.stop()
            self.repl = None
        REGISTRY.kill_marked(self.prefix)
        REGISTRY.sweep()
        self.env_script, self.shell_cwd, self.prelude_for = "", "", ""
