"""One-shot code tools: python, javascript (node) and powershell (pwsh, where the image has it).

The code goes to a file in the session's private directory (an argument could not hold a megabyte, and every
uid can read every process's argv: docs/runner-trust.md §3) and runs from the workspace root with the runner's
base environment, under the same limits as bash.
"""

from __future__ import annotations

import contextlib
import os
import shutil

from toolrunner.runner.context import Call, ToolFailure, check_fields, require_str
from toolrunner.runner.execute import run
from toolrunner.runner.identity import IdentityError, files_as
from toolrunner.runner.state import Session


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


def _one_shot(session: Session, call: Call, field: str, suffix: str, argv: list[str]) -> None:
    """Run the code from a temp file (never inline in argv, where other sessions could read it)."""
    check_fields(call.input, {field, "timeout_s"})
    code = require_str(call.input, field, allow_empty=False)
    token = session.token("x")
    path = _code_file(session, token, suffix, code)
    if path is None:
        raise ToolFailure("RESOURCE_LIMIT", "/tmp is full: the code cannot be written to a file to run")
    try:
        run(call, [*argv, path], session=session, env=session.env(), cwd=session.runtime.workspace.root)
    finally:
        _remove(session, path)


def python(session: Session, call: Call) -> None:
    _one_shot(session, call, "code", ".py", [session.runtime.python, "-u"])


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
