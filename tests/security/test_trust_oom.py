"""Issue 7, the OOM order holds: every tool process starts with ``oom_score_adj`` 1000 pinned by the runner
(docs/runner-trust.md §4), so the OOM killer takes a session's processes before the runner, and no tool code
can lower the value again — not through bash, python, a background process, the REPL, a forked child, the
legacy ``oom_adj`` file, or another process of its own session. What the API answers and the audit records
must both show the refusal.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from trust_support import (
    Tenant,
    background_output,
    check_all,
    expect,
    snippet,
    tenants,
    trust,
    without_kill_note,
)

__all__ = ["tenants", "trust"]  # fixtures, imported for pytest

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(240)]

# Each attempt prints its exit status; a refusal is `rc=1` (the redirection's open fails, its message goes to
# the closed stderr). Even the value it already has cannot be written: the file is not writable at all.
BASH_ATTEMPTS = r'''cat /proc/self/oom_score_adj
echo 0 2>&- > /proc/self/oom_score_adj; echo "self rc=$?"
echo 999 2>&- > /proc/self/oom_score_adj; echo "999 rc=$?"
echo -17 2>&- > /proc/self/oom_adj; echo "legacy rc=$?"
sleep 60 & sib=$!
echo -1000 2>&- > /proc/$sib/oom_score_adj; echo "sibling rc=$?"
echo 0 2>&- > /proc/$$/oom_score_adj; echo "shell rc=$?"
cat /proc/self/oom_score_adj /proc/$sib/oom_score_adj /proc/$$/oom_score_adj
kill $sib
echo 1000 2>&- > /proc/self/oom_score_adj; echo "same rc=$?"
'''
BASH_EXPECTED = ("1000\nself rc=1\n999 rc=1\nlegacy rc=1\nsibling rc=1\nshell rc=1\n1000\n1000\n1000\n"
                 "same rc=1\n")

# Python: the process itself, the legacy file, and a child forked as the very first act of the program (before
# any write of ours could have run if the value were set from outside after exec).
ATTEMPT_LIB = r"""
def attempt(path, value):
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as e:
        return "open " + errno.errorcode.get(e.errno, str(e.errno))
    try:
        os.write(fd, value)
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    finally:
        os.close(fd)

def value(pid="self"):
    with open(f"/proc/{pid}/oom_score_adj") as f:
        return f.read().strip()
"""
PY_SELF = r"""
runner = runner_pid()
emit({"self": {"before": value(), "lower": attempt("/proc/self/oom_score_adj", b"-1000"),
               "legacy": attempt("/proc/self/oom_adj", b"-17"), "after": value()},
      "runner": None if runner is None else value(runner),
      "runner_locked_kb": None if runner is None else int(status(runner)["VmLck"].split()[0]),
      "runner_write": None if runner is None else attempt(f"/proc/{runner}/oom_score_adj", b"1000")})
"""
PY_CHILD = r"""
print("@@CHILD@@" + json.dumps({"before": value(), "lower": attempt("/proc/self/oom_score_adj", b"0"),
                                "after": value()}), flush=True)
"""
# The fork comes first; the child then reads its program from a pipe.
PY_FORK_FIRST = r"""import os as _os
_r, _w = _os.pipe()
_pid = _os.fork()
if _pid == 0:
    _os.close(_w)
    _src = b""
    while _chunk := _os.read(_r, 65536):
        _src += _chunk
    exec(_src.decode())
    _os._exit(0)
_os.close(_r)
"""
PY_EXPECTED_SELF = {"before": "1000", "lower": "open EACCES", "legacy": "open EACCES", "after": "1000"}
PY_EXPECTED_CHILD = {"before": "1000", "lower": "open EACCES", "after": "1000"}

REPL_CODE = r'''
import errno, os
def _attempt(value):
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(value)
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
print(open("/proc/self/oom_score_adj").read().strip(), _attempt("0"), _attempt("-1000"),
      open("/proc/self/oom_score_adj").read().strip())
'''


def _python_program() -> str:
    """A program whose first statements fork a child, which runs PY_CHILD; the parent then runs PY_SELF."""
    child = snippet(ATTEMPT_LIB + PY_CHILD).encode()
    return (PY_FORK_FIRST + f"_view = memoryview({child!r})\nwhile _view:\n    _view = _view[_os.write(_w, _view):]\n"
            "_os.close(_w)\n_os.waitpid(_pid, 0)\n" + snippet(ATTEMPT_LIB + PY_SELF))


def test_tool_code_cannot_lower_its_oom_score_adj(tenants: Any) -> None:
    """bash (itself, a sibling, the session shell, the legacy file), python (itself and a child forked as its
    first act), a background process and the REPL all start at oom_score_adj 1000 and every attempt to lower
    it is refused (EACCES), in the API's answer and the audit record alike; the runner stays below 1000, its
    file is not writable by tool code, and its code is locked in memory (resident.py)."""
    t: Tenant = tenants("oom")
    a, b = t.session(), t.session()
    problems: list[str] = []

    for s in (a, b):
        shell = t.bash(BASH_ATTEMPTS, s)
        problems += expect(t, shell, exit_code=0, output=BASH_EXPECTED)

    py = t.python(_python_program(), a)
    problems += expect(t, py, exit_code=0)
    report = py.report() or {}
    child_lines = [line for line in py.output.splitlines() if line.startswith("@@CHILD@@")]
    child = json.loads(child_lines[-1][len("@@CHILD@@"):]) if child_lines else None
    if report.get("self") != PY_EXPECTED_SELF:
        problems.append(f"python: {report.get('self')}, expected {PY_EXPECTED_SELF}")
    if child != PY_EXPECTED_CHILD:
        problems.append(f"python's first-act child: {child}, expected {PY_EXPECTED_CHILD}")
    runner_value = report.get("runner")
    if runner_value is None or int(runner_value) >= 1000:
        problems.append(f"the runner's oom_score_adj is {runner_value!r}: it must stay below its tools'")
    if not (report.get("runner_locked_kb") or 0) >= 1024:
        problems.append(f"the runner's code is not locked in memory: VmLck {report.get('runner_locked_kb')} kB")
    if report.get("runner_write") not in ("open EACCES", "EACCES"):
        problems.append(f"writing the runner's oom_score_adj: {report.get('runner_write')!r}")

    bid = t.background(BASH_ATTEMPTS, b)
    text, done = background_output(t, bid, b)
    problems += expect(t, done, exit_code=0)
    if without_kill_note(text) != BASH_EXPECTED:
        problems.append(f"background: {text!r}, expected {BASH_EXPECTED!r}")

    repl = t.call("repl", {"code": REPL_CODE}, a)
    problems += expect(t, repl, exit_code=0, output="1000 EACCES EACCES 1000\n")
    check_all(problems)
