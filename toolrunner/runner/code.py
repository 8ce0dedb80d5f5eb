"""One-shot code tools: python, javascript (node) and powershell (pwsh, where the image has it).

The code goes to a file in the session's private directory (an argument could not hold a megabyte, and every
uid can read every process's argv: docs/runner-trust.md §3) and runs from the workspace root with the runner's
base environment, under the same limits as bash.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from functools import partial

from toolrunner.runner.context import Call, ToolFailure, check_fields, require_str
from toolrunner.runner.execute import run
from toolrunner.runner.identity import IdentityError, files_as
from toolrunner.runner.spares import SPARES
from toolrunner.runner.state import Session
from toolrunner.runner.zygote import ZYGOTES

# The server's name for the throwaway session of a call made outside any session (server/tools/dispatch.py):
# such a session is closed right after its one call, so starting a zygote for it would only cost CPU.
ONE_SHOT_PREFIX = "oneshot-"


def _code_file(session: Session, token: str, suffix: str, code: str) -> str | None:
    """The code written, as the session, to a file in its private directory; None if /tmp is full."""
    path = os.path.join(session.dir, f"{token}{suffix}")
    try:
        with files_as(session.ident), open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(code)
    except (OSError, IdentityError):
        _remove(session, path)
        return None
    return path


def _remove(session: Session, path: str) -> None:
    with contextlib.suppress(OSError, IdentityError), files_as(session.ident):
        os.unlink(path)


def _one_shot(session: Session, call: Call, field: str, suffix: str, argv: list[str], *,
              zygote: bool = False) -> None:
    """Run the code from a temp file (never inline in argv, where other sessions could read it).
    With `zygote` (python), the process is forked from the session's zygote when one is ready, and one is
    started after the answer when none is (toolrunner.runner.zygote)."""
    check_fields(call.input, {field, "timeout_s"})
    code = require_str(call.input, field, allow_empty=False)
    token = session.token("x")
    path = _code_file(session, token, suffix, code)
    if path is None:
        raise ToolFailure("RESOURCE_LIMIT", "/tmp is full: the code cannot be written to a file to run")
    env, cwd = session.env(call.call_id), session.runtime.workspace.root
    forked = None
    if zygote:
        ready = ZYGOTES.get(session.ident)
        if ready is not None:
            forked = partial(ready.fork, cwd, path, env)
        elif not session.name.startswith(ONE_SHOT_PREFIX):
            ident, python, start_env = session.ident, session.runtime.python, session.env_without_credential()
            call.defer(lambda: ZYGOTES.start_later(ident, python, start_env))
    try:
        run(call, [*argv, path], session=session, env=env, cwd=cwd, forked=forked)
    finally:
        _remove(session, path)


def python(session: Session, call: Call) -> None:
    if session.adopt_ready() and session.shell_lock.acquire(blocking=False):
        # A new session (a session-less call's is always one): take the spare's uid, shell and, when the spare
        # was filled after a python call, its zygote; the next spare comes with a zygote.
        try:
            if session.shell is None and (shell := SPARES.take(session)) is not None:
                session.shell = shell
        finally:
            session.shell_lock.release()
        call.defer(lambda: SPARES.refill(session.runtime, python=True))
    _one_shot(session, call, "code", ".py", [session.runtime.python, "-u"], zygote=True)


def javascript(session: Session, call: Call) -> None:
    if not _which(session, "node"):
        raise ToolFailure("TOOL_UNAVAILABLE", "node is not installed in the sandbox image")
    _one_shot(session, call, "code", ".js", ["node"])


def powershell(session: Session, call: Call) -> None:
    if not _which(session, "pwsh"):
        raise ToolFailure("TOOL_UNAVAILABLE", "pwsh (PowerShell) is not installed in the sandbox image")
    # pwsh's first positional argument is the script file (-File).
    _one_shot(session, call, "command", ".ps1", ["pwsh", "-NoLogo", "-NoProfile", "-NonInteractive"])


def _which(session: Session, name: str) -> bool:
    return shutil.which(name, path=session.runtime.base_env.get("PATH")) is not None
