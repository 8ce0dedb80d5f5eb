"""The persistent Python interpreter behind the `repl` tool (run as a script, standard library only).

Requests and replies are length-prefixed JSON frames on two inherited pipe fds (argv[1] in, argv[2] out),
so the user's code keeps stdout and stderr to itself. SIGINT is ignored between requests and raises
KeyboardInterrupt only while user code runs: that is how the runner interrupts a call that runs too long.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import struct
import sys
import traceback
from typing import Any

MAX_REPR = 100_000


def _read_exact(fd: int, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        part = os.read(fd, n - len(buf))
        if not part:
            return None
        buf += part
    return buf


def _send(fd: int, obj: dict[str, Any]) -> None:
    body = json.dumps(obj).encode()
    data = struct.pack(">I", len(body)) + body
    while data:
        data = data[os.write(fd, data) :]


def _run(code: str, ns: dict[str, Any]) -> str | None:
    """Execute `code`; returns the repr of a trailing expression's value, or None."""
    tree = ast.parse(code, "<repl>", "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body[-1].value)
        tree.body.pop()
    exec(compile(tree, "<repl>", "exec"), ns)  # noqa: S102 - running the user's code is the job
    if last is None:
        return None
    value = eval(compile(last, "<repl>", "eval"), ns)  # noqa: S307
    if value is None:
        return None
    ns["_"] = value
    text = repr(value)
    return text if len(text) <= MAX_REPR else text[:MAX_REPR] + f"... [{len(text) - MAX_REPR} chars cut]"


def _handle(code: str, ns: dict[str, Any]) -> tuple[bool, str | None]:
    ok: bool = True
    value: str | None = None
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            value = _run(code, ns)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    except BaseException as exc:
        ok = False
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb)
    return ok, value


def main() -> None:
    # The OOM killer should take the session's interpreter before the runner; raising needs no privilege.
    try:
        with open("/proc/self/oom_score_adj", "w", encoding="ascii") as f:
            f.write("1000")
    except OSError:
        pass
    rfd, wfd = int(sys.argv[1]), int(sys.argv[2])
    os.set_inheritable(rfd, False)
    os.set_inheritable(wfd, False)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.path.insert(0, "")
    sys.argv = [""]
    ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
    while True:
        header = _read_exact(rfd, 4)
        if header is None:
            return
        body = _read_exact(rfd, struct.unpack(">I", header)[0])
        if body is None:
            return
        request = json.loads(body)
        # This call's proxy variables (docs/egress.md): what its code starts or connects with names this call.
        os.environ.update(request.get("env") or {})
        ok, value = _handle(request["code"], ns)
        sys.stdout.flush()
        sys.stderr.flush()
        _send(wfd, {"ok": ok, "value": value})


if __name__ == "__main__":
    main()
