"""Issue 7, what sessions of one tenant share through /proc (docs/runner-trust.md §3): every uid may read every
process's ``cmdline`` and ``stat`` (hiding them needs /proc mounted ``hidepid``, i.e. CAP_SYS_ADMIN in the
container), so nothing of a session's may ever be in a command line. Session A has a bash call, a python call
and a background process in flight, each holding a secret in its text, and an exported secret; session B reads
everything /proc shows it, and must find none of them.
"""

from __future__ import annotations

from typing import Any

import pytest
from trust_support import Tenant, background_output, check_all, expect, in_parallel, snippet, tenants, trust, uniq

__all__ = ["tenants", "trust"]  # fixtures, imported for pytest

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(240)]

# Session B: read cmdline, stat, status, environ and the files named in every argv of every process; report
# where a secret showed up and which reads were refused.
SCAN = r'''
for path in CFG["ready"]:
    wait_for(path)
secrets = CFG["secrets"]
found, refused, seen = [], {}, 0
def look(where, data):
    for s in secrets:
        if s.encode() in data:
            found.append([where, s])
def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        refused[path] = errno.errorcode.get(e.errno, str(e.errno))
        return b""
try:
    for p in pids():
        if p == os.getpid():
            continue
        seen += 1
        for name in ("cmdline", "stat", "status", "environ", "comm"):
            look(f"{p}/{name}", read(f"/proc/{p}/{name}"))
        for arg in (argv(p) or [])[1:]:
            if arg.startswith("/") and os.path.isfile(arg):
                look(f"{p} file {arg}", read(arg))
finally:
    open(CFG["go"], "w").close()
emit({"found": found, "refused": refused, "seen": seen})
'''

A_PYTHON = r'''
SECRET = CFG["secret"]
open(CFG["ready"], "w").close()
wait_for(CFG["go"])
print("python done")
'''


def test_another_session_cannot_read_code_environment_or_commands_through_proc(tenants: Any) -> None:
    """While session A's bash call, python call and background process (each with a secret in its code) run
    and A has exported a secret, session B reads every process's cmdline, stat, status, environ and the files
    their argv names: no secret is in anything it can read, and every environ of A's processes is refused."""
    t: Tenant = tenants("proc")
    u = uniq()
    a, b = t.session(), t.session()
    s_env, s_bash, s_py, s_bg = (f"{kind}-{u}-SECRET" for kind in ("env", "bash", "py", "bg"))
    ready = [f"/workspace/ready-{u}-{n}" for n in range(3)]
    go = f"/workspace/go-{u}"
    problems = expect(t, t.bash(f"export OA_TEST_SECRET={s_env}; echo ok", a), exit_code=0, output="ok\n")
    wait_go = f"while [ ! -e {go} ]; do sleep 0.02; done"
    bg = t.background(f"X={s_bg}; : > {ready[2]}; {wait_go}; echo bg done", a)
    pool_bash, bash_call = in_parallel(lambda: t.bash(f"X={s_bash}; : > {ready[0]}; {wait_go}; echo bash done", a))
    pool_py, py_call = in_parallel(lambda: t.python(snippet(A_PYTHON, secret=s_py, ready=ready[1], go=go), a))
    try:
        scan = t.python(snippet(SCAN, ready=ready, go=go, secrets=[s_env, s_bash, s_py, s_bg]), b)
    finally:
        t.bash(f": > {go}", b)
        bash_result, py_result = bash_call.result(timeout=90), py_call.result(timeout=90)
        pool_bash.shutdown()
        pool_py.shutdown()
    problems += expect(t, scan, exit_code=0)
    problems += expect(t, bash_result, exit_code=0, output="bash done\n")
    problems += expect(t, py_result, exit_code=0, output="python done\n")
    text, done = background_output(t, bg, a)
    if text != "bg done\n" or done.exit_code != 0:
        problems.append(f"background: {text!r}, {done.brief()}")
    report = scan.report() or {}
    if report.get("found"):
        problems.append(f"session B read A's secrets: {report['found']}")
    if not report.get("seen"):
        problems.append(f"session B saw no process at all: {report}")
    environs = [path for path in report.get("refused", {}) if path.endswith("/environ")]
    if not environs:
        problems.append(f"no environ read was refused, so A's processes were not looked at: {report}")
    check_all(problems, f"(scan: {str(report)[:2000]})")


def test_a_session_reopens_its_own_output_but_another_session_cannot(tenants: Any) -> None:
    """A bash call writes through /dev/stdout, /dev/stderr and /proc/self/fd/1 (reopening its output pipes, which
    the runner made and opened to the session's group); session B, same group, cannot open A's shell's fds."""
    t: Tenant = tenants("devstd")
    a, b = t.session(), t.session()
    problems = expect(t, t.bash("echo one > /dev/stdout; echo two > /proc/self/fd/1; echo three > /dev/stderr", a),
                      exit_code=0, output="one\ntwo\nthree\n")
    holder = t.bash("echo $$", a)
    problems += expect(t, holder, exit_code=0)
    shell_pid = holder.output.strip()
    probe = t.bash(f"for fd in 0 1 2; do (echo x 2>&- >/proc/{shell_pid}/fd/$fd) 2>&- && echo opened $fd; done; "
                   f"ls /proc/{shell_pid}/fd 2>&- || echo refused", b)
    problems += expect(t, probe, exit_code=0, output="refused\n")
    check_all(problems)
