"""Runner-wide facts (workspace, private temp dir, base environment, identities) and per-session state.

A session owns: an identity (its own uid in mode "uid"), a private directory (``0700``, owned by that uid:
its ``$HOME``, its saved shell state, its code files), its shell, its background processes and its REPL.
Closing the session kills every process of its identity and returns the uid to the pool.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from toolrunner.runner.context import ToolFailure
from toolrunner.runner.egress_env import KEY_VARIABLE, call_proxy_env
from toolrunner.runner.identity import Ident, Identities, IdentityError, files_as
from toolrunner.runner.paths import Workspace
from toolrunner.runner.procs import REGISTRY, all_pids, log, uid_of
from toolrunner.runner.scrub import scrub

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
    egress_key: bytes | None = None  # allowlist: the container's key for calls' proxy credentials

    @classmethod
    def create(cls, root: str) -> Runtime:
        tmp = tempfile.mkdtemp(prefix="openanalyst-runner-")
        # Tools may pass through (to their own session directory, the boot file) but not list or write it;
        # in sessions/ each session makes its own directory and cannot see or remove another's.
        os.chmod(tmp, 0o711)  # noqa: S103 - execute-only for others
        os.mkdir(os.path.join(tmp, "sessions"))
        os.chmod(os.path.join(tmp, "sessions"), 0o1733)  # noqa: S103 - create-only, sticky
        env = {k: v for k, v in os.environ.items() if k not in _RUNNER_VARS and not k.startswith("OPENANALYST_")}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env.setdefault("HOME", tmp)
        env["PWD"] = os.path.realpath(root)
        caps = {name: shutil.which(name, path=env["PATH"]) is not None for name in ("bash", "node", "rg", "pwsh")}
        caps["python"] = True
        python = sys.executable or shutil.which("python3", path=env["PATH"]) or "python3"
        try:
            key = bytes.fromhex(os.environ.get(KEY_VARIABLE, "")) or None
        except ValueError:
            key = None
        return cls(Workspace(root), tmp, env, caps, python, key)

    @property
    def identities(self) -> Identities:
        return REGISTRY.identities

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


_session_numbers = itertools.count(1)


def _private_dir(rt: Runtime, ident: Ident, number: int) -> str:
    """Make, as the session, a 0700 directory with an unguessable name in the runner's sessions directory
    (``1733``: anyone may create an entry, nobody may list or remove another's), and check it is ours."""
    parent = os.path.join(rt.tmp, "sessions")
    try:
        with files_as(ident):
            for _ in range(8):
                path = os.path.join(parent, f"s{number}-{secrets.token_hex(8)}")
                try:
                    os.mkdir(path, 0o700)
                except FileExistsError:
                    continue
                st = os.lstat(path)
                if not stat.S_ISDIR(st.st_mode) or st.st_uid != ident.uid:
                    raise OSError(f"{path} is not the session's own directory")
                os.mkdir(os.path.join(path, "home"), 0o700)
                return path
    except (OSError, IdentityError) as exc:
        raise ToolFailure("RESOURCE_LIMIT", f"cannot make the session's directory: {exc}") from None
    raise ToolFailure("INTERNAL", "cannot find a free name for the session's directory")


@dataclass
class Session:
    """One agent session's identity, private directory, shell, background processes and REPL."""

    name: str
    runtime: Runtime
    number: int = field(default_factory=lambda: next(_session_numbers))
    background: dict[str, Background] = field(default_factory=dict)
    repl: Repl | None = None
    shell: Shell | None = None
    shell_lock: threading.Lock = field(default_factory=threading.Lock)  # one bash call at a time
    repl_lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False
    _ident: Ident | None = None
    _dir: str | None = None
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _setup_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def ident(self) -> Ident:
        """The uid/gid this session's processes run as, taken from the pool on first use."""
        with self._setup_lock:
            if self._ident is None:
                ident = self.runtime.identities.acquire()
                if ident is None:
                    raise ToolFailure("RESOURCE_LIMIT", "no free session identity: too many open sessions")
                self._ident = ident
            return self._ident

    @property
    def dir(self) -> str:
        """The session's private directory (its $HOME, shell state, code files), made on first use."""
        ident = self.ident
        with self._setup_lock:
            if self._dir is None:
                self._dir = _private_dir(self.runtime, ident, self.number)
            return self._dir

    @property
    def home(self) -> str:
        return os.path.join(self.dir, "home")

    def env(self, call_id: str | None) -> dict[str, str]:
        """The environment of a process call ``call_id`` starts: the base environment with this session's HOME
        and, under allowlist, proxy variables carrying that call's own credential (egress_env.call_proxy_env),
        so the proxy names the call whose process connects, whenever it connects (docs/egress.md)."""
        env = self.env_without_credential()
        if self.runtime.egress_key is not None:
            env.update(call_proxy_env(self.runtime.egress_key, self.name, call_id))
        return env

    def proxy_env(self, call_id: str | None) -> dict[str, str]:
        """Only the proxy variables of ``call_id`` (empty when the container has no egress key)."""
        if self.runtime.egress_key is None:
            return {}
        return call_proxy_env(self.runtime.egress_key, self.name, call_id)

    def env_without_credential(self) -> dict[str, str]:
        """The environment of a process the runner keeps for the session across calls (its session shell, its
        zygote, its REPL at start): without proxy variables, since a process can read its start environment
        back from its own memory (/proc/self/environ), and so can every call forked from it; a spare's
        processes also serve a session with another name. Each call's processes get theirs from ``env``."""
        return {**self.runtime.base_env, "HOME": self.home}

    def adopt_ready(self) -> bool:
        """Whether this session may still take another's identity (it has none of its own yet)."""
        with self._setup_lock:
            return self._ident is None

    def adopt(self, other: Session) -> bool:
        """Take `other`'s identity and private directory (a spare's); False if this session got its own."""
        with self._setup_lock, other._setup_lock:
            if self._ident is not None or other._ident is None or other._dir is None:
                return False
            self._ident, self._dir = other._ident, other._dir
            other._ident, other._dir = None, None
            other.closed = True
            return True

    def token(self, kind: str) -> str:
        """A name unique within the session (background process ids, temp files)."""
        return f"{kind}{next(self._counter)}"

    def close(self) -> None:
        """Stop everything the session started and give its uid back."""
        self.closed = True
        shell = self.shell
        if shell is not None:
            shell.kill()
            if self.shell_lock.acquire(timeout=10):
                try:
                    shell.reset()
                finally:
                    self.shell_lock.release()
        for bg in list(self.background.values()):
            bg.kill()
        self.background.clear()
        if self.repl is not None:
            self.repl.stop()
            self.repl = None
        ident = self._ident
        if ident is None:
            return
        if self.runtime.identities.exclusive():
            REGISTRY.kill_uid(ident)
        else:
            REGISTRY.sweep(ident)
        if self._dir is not None:
            with contextlib.suppress(OSError, IdentityError), files_as(ident):
                shutil.rmtree(self._dir, ignore_errors=True)
        # A uid goes back to the pool only with no process left (one stuck in the kernel keeps it out) and
        # nothing of it left in the shared scratch places (scrub.py): a later session may be handed it.
        if self.runtime.identities.exclusive() and not any(uid_of(p) == ident.uid for p in all_pids()):
            if scrub(ident):
                self.runtime.identities.release(ident)
            else:
                log(f"uid {ident.uid} kept out of the pool: files of its closed session could not all be removed")
