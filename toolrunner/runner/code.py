"""One-shot code tools: python, javascript (node) and powershell (pwsh, where the image has it).

The code goes to a file in the runner's private temp dir (an argument could not hold a megabyte) and runs
from the workspace root with the runner's base environment, under the same limits as bash.
"""

from __future__ import annotations

import contextlib
import os
import shutil

from toolrunner.runner.context import Call, ToolFailure, check_fields, require_str
from toolrunner.runner.execute import run
from toolrunner.runner.state import Session


def _code_file(session: Session, token: str, suffix: str, code: str) -> str:
    path = os.path.join(session.runtime.tmp, f"{token}{suffix}")
    try:
        with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(code)
    except OSError as exc:
        raise ToolFailure("RESOURCE_LIMIT", f"cannot write the code to /tmp: {exc.strerror}") from None
    return path


def _one_shot(session: Session, call: Call, field: str, suffix: str, argv: list[str]) -> None:
    check_fields(call.input, {field, "timeout_s"})
    code = require_str(call.input, field, allow_empty=False)
    token = session.token("x")
    path = _code_file(session, token, suffix, code)
    try:
        run(call, [*argv, path], token=token, env=session.runtime.base_env, cwd=session.runtime.workspace.root)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def python(session: Session, call: Call) -> None:
    _one_shot(session, call, "code", ".py", [session.runtime.python, "-u"])


def javascript(session: Session, call: Call) -> None:
    if not _which(session, "node"):
        raise ToolFailure("TOOL_UNAVAILABLE", "node is not installed in the sandbox image")
    _one_shot(session, call, "code", ".js", ["node"])


def powershell(session: Session, call: Call) -> None:
    if not _which(session, "pwsh"):
        raise ToolFailure("TOOL_UNAVAILABLE", "pwsh (PowerShell) is not installed in the sandbox image")
    _one_shot(session, call, "command", ".ps1", ["pwsh", "-NoLogo", "-NoProfile", "-NonInteractive", "-File"])


def _which(session: Session, name: str) -> bool:
    return shutil.which(name, path=session.runtime.base_env.get("PATH")) is not None
