"""The python tool's forking interpreter (toolrunner/runner/zygote.py) against the real engine: a call forked
from a session's zygote answers like a fresh interpreter, nothing one call does reaches a later call, the
zygote is out of reach of the code it serves (its own session's included) and of every other session, and
a zygote that was tampered with or killed is replaced while calls keep working."""

from __future__ import annotations

import json
import os
import shlex
import time
import uuid
from typing import Any

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.timeout(240)]

# Lists the zygotes of this uid (by the first line of their program, which is their argv) from inside.
FIND = """
import os
def zygotes():
    found = []
    for p in os.listdir('/proc'):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            with open(f'/proc/{p}/cmdline', 'rb') as f:
                args = f.read()
            with open(f'/proc/{p}/status') as f:
                uid = int(next(l for l in f if l.startswith('Uid:')).split()[1])
        except (OSError, StopIteration):
            continue
        if b"forking interpreter" in args:
            found.append((int(p), uid))
    return found
"""


def run_py(harness: Any, tenant: str, code: str, session: str = "s1", **kw: Any) -> Any:
    return harness.call(tenant, "python", {"code": code}, session=session, **kw).result


def out(harness: Any, tenant: str, code: str, session: str = "s1") -> str:
    result = run_py(harness, tenant, code, session)
    assert result.error is None and result.exit_code == 0, result
    return str(result.output)


def forked(harness: Any, tenant: str, session: str = "s1") -> bool:
    """Whether this session's python calls now come from its zygote (started with -s: no user site flag)."""
    return out(harness, tenant, "import sys; print(sys.flags.no_user_site)", session).strip() == "1"


def wait_forked(harness: Any, tenant: str, session: str = "s1", timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not forked(harness, tenant, session):
        assert time.monotonic() < deadline, "no zygote served the session's python calls"


def test_a_forked_call_answers_like_a_fresh_interpreter(harness: Any) -> None:
    """Exit codes (from the kernel), tracebacks, output order, stdin, cwd, uid, HOME, timeouts and output caps
    of a forked call are those of a process started for the call."""
    t = "zy-fresh"
    fresh = json.loads(out(harness, t, "import os, sys, json; print(json.dumps([os.getcwd(), os.getuid(), "
                                       "os.environ['HOME'], sys.argv[0].rsplit('/', 1)[0], sorted(sys.modules)]))"))
    wait_forked(harness, t)
    again = json.loads(out(harness, t, "import os, sys, json; print(json.dumps([os.getcwd(), os.getuid(), "
                                       "os.environ['HOME'], sys.argv[0].rsplit('/', 1)[0], sorted(sys.modules)]))"))
    assert again == fresh and again[0] == "/workspace" and 10000 <= again[1] < 11000
    assert run_py(harness, t, "import sys; sys.exit(3)").exit_code == 3
    r = run_py(harness, t, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert r.exit_code == 137
    r = run_py(harness, t, "print('before')\nraise ValueError('boom')")
    assert r.exit_code == 1 and r.output.startswith("before\nTraceback (most recent call last):\n  File \"/tmp/")
    assert "ValueError: boom" in r.output and "forking" not in r.output and "_run" not in r.output
    r = run_py(harness, t, "import sys; sys.exit('bye')")
    assert r.exit_code == 1 and r.output == "bye\n"
    assert out(harness, t, "import sys; print(repr(sys.stdin.read()))") == "''\n"
    r = run_py(harness, t, "import time; print('x', flush=True); time.sleep(30)", timeout_s=1)
    assert r.timed_out and r.limit == "timeout" and r.output.startswith("x")
    r = run_py(harness, t, "print('y' * 200000)")
    assert r.truncated and r.exit_code == 0
    assert out(harness, t, "import threading, atexit, time\natexit.register(print, 'atexit ran')\n"
                            "threading.Thread(target=lambda: time.sleep(0.2) or print('thread ran')).start()\n"
                            "f = open('/workspace/unclosed.txt', 'w')\nf.write('flushed')\nprint('main')") == \
        "main\nthread ran\natexit ran\n"
    assert out(harness, t, "print(open('/workspace/unclosed.txt').read())") == "flushed\n"
    assert forked(harness, t)


LEAK = """
import builtins, os, resource, signal, sys, threading, json, time
open('/workspace/zmod.py', 'w').write('VALUE = 1\\n')
sys.path.insert(0, '/workspace')
import zmod
sys.modules['json'] = 'patched'
builtins.leaked = True
keep = open('/workspace/kept.txt', 'w')
threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
signal.signal(signal.SIGUSR1, lambda *a: None)
os.environ['LEAKED'] = '1'
os.umask(0o077)
os.chdir('/tmp')
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
print('leaked')
"""

CHECK = """
import builtins, os, resource, signal, sys, threading, json
print(json.dumps({
    'zmod': 'zmod' in sys.modules, 'json_ok': hasattr(json, 'dumps'), 'builtins': hasattr(builtins, 'leaked'),
    'fds': sorted(int(f) for f in os.listdir('/proc/self/fd')), 'threads': threading.active_count(),
    'sigusr1': signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL, 'env': 'LEAKED' in os.environ,
    'umask': os.umask(0o002), 'cwd': os.getcwd(), 'nofile': resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    'path': '/workspace' in sys.path, 'nice': os.getpriority(os.PRIO_PROCESS, 0),
}))
"""


def clean(harness: Any, tenant: str, session: str = "s1") -> dict[str, Any]:
    state: dict[str, Any] = json.loads(out(harness, tenant, CHECK, session))
    assert state == {"zmod": False, "json_ok": True, "builtins": False, "fds": [0, 1, 2, 3], "threads": 1,
                     "sigusr1": True, "env": False, "umask": 0o002, "cwd": "/workspace",
                     "nofile": state["nofile"], "path": False, "nice": 0}, state
    assert state["nofile"] > 64
    return state


def test_nothing_a_call_does_reaches_the_next_call(harness: Any) -> None:
    """Modules imported, sys.modules patched, builtins changed, files kept open, threads, signal handlers,
    environment, umask, cwd and resource limits of one forked call are all gone in the next one."""
    t = "zy-leak"
    out(harness, t, "pass")
    wait_forked(harness, t)
    clean(harness, t)
    assert out(harness, t, LEAK) == "leaked\n"
    assert forked(harness, t)
    clean(harness, t)


ATTACK = FIND + """
import ctypes, os, resource, signal, json
me = os.getuid()
z = [p for p, uid in zygotes() if uid == me]
found = {'zygotes': len(z)}
pid = z[0]
for what in ('mem', 'environ', 'fd'):
    try:
        (os.listdir if what == 'fd' else open)(f'/proc/{pid}/{what}')
        found[what] = 'opened'
    except PermissionError:
        found[what] = 'denied'
libc = ctypes.CDLL(None, use_errno=True)
found['ptrace'] = libc.ptrace(16, pid, 0, 0)  # PTRACE_ATTACH
os.kill(pid, signal.SIGSTOP)
os.kill(pid, signal.SIGTERM)
os.kill(pid, signal.SIGINT)
os.setpriority(os.PRIO_PROCESS, pid, 10)
found['tampered'] = True
print(json.dumps(found))
"""


def test_the_sessions_own_code_cannot_take_over_its_zygote(harness: Any) -> None:
    """A forked call's code can neither trace the zygote nor open its memory, environment or fds (it is not
    dumpable); stopping it, catchable signals and a changed nice value do not reach later calls: the runner
    resumes it, it ignores them, and a zygote whose inherited settings changed retires and is replaced."""
    t = "zy-attack"
    out(harness, t, "pass")
    wait_forked(harness, t)
    found = json.loads(out(harness, t, ATTACK))
    assert found == {"zygotes": 1, "mem": "denied", "environ": "denied", "fd": "denied", "ptrace": -1,
                     "tampered": True}
    clean(harness, t)  # answered by a fresh process: the tampered zygote retired
    wait_forked(harness, t)
    state = clean(harness, t)
    assert state["nice"] == 0


def test_a_changed_scheduling_policy_does_not_reach_later_calls(harness: Any) -> None:
    """A call that moves its zygote to SCHED_IDLE (any process of the uid may) only retires it: the later
    calls, the one after it and those forked from the next zygote, run under the normal policy."""
    t = "zy-sched"
    out(harness, t, "pass")
    wait_forked(harness, t)
    idle = FIND + ("import os\nfor p, uid in zygotes():\n    if uid == os.getuid():\n"
                   "        os.sched_setscheduler(p, os.SCHED_IDLE, os.sched_param(0))\nprint('idle')")
    assert out(harness, t, idle) == "idle\n"
    policy = "import os; print(os.sched_getscheduler(0))"
    assert out(harness, t, policy) == f"{os.SCHED_OTHER}\n"
    wait_forked(harness, t)
    assert out(harness, t, policy) == f"{os.SCHED_OTHER}\n"


def test_another_session_cannot_reach_a_zygote(harness: Any) -> None:
    """A session cannot signal another session's zygote or open its /proc entries; the owner's calls go on."""
    t = "zy-cross"
    out(harness, t, "pass", session="victim")
    wait_forked(harness, t, "victim")
    code = FIND + """
import os, json, signal
me = os.getuid()
found = []
for pid, uid in zygotes():
    if uid == me:
        continue
    r = {}
    for what, act in (('kill', lambda: os.kill(pid, signal.SIGKILL)), ('stop', lambda: os.kill(pid, signal.SIGSTOP)),
                      ('mem', lambda: open(f'/proc/{pid}/mem')), ('prio', lambda: os.setpriority(0, pid, 19))):
        try:
            act()
            r[what] = 'done'
        except PermissionError:
            r[what] = 'denied'
    found.append(r)
print(json.dumps(found))
"""
    found = json.loads(out(harness, t, code, session="attacker"))
    assert found and all(r == {"kill": "denied", "stop": "denied", "mem": "denied", "prio": "denied"} for r in found)
    assert forked(harness, t, "victim")


def test_what_a_forked_call_leaves_is_killed_and_a_killed_zygote_is_replaced(harness: Any) -> None:
    """Processes a forked call leaves behind (setsid, double fork) are gone when it answers; killing the
    zygote from bash only makes the next python call start a process of its own, then a new zygote."""
    t = "zy-left"
    out(harness, t, "pass")
    wait_forked(harness, t)
    r = run_py(harness, t, "import os, subprocess\n"
                           "subprocess.Popen(['sleep', '317'], start_new_session=True)\n"
                           "if os.fork() == 0:\n    os.setsid()\n    os.execvp('sleep', ['sleep', '318'])\n"
                           "print('spawned')")
    assert r.exit_code == 0 and r.output == "spawned\n"
    assert "sleep 31" not in harness.bash(t, "ps -eo args").result.output
    out(harness, t, "pass")
    wait_forked(harness, t)
    kill = FIND + "import os\nfor p, uid in zygotes():\n    if uid == os.getuid():\n        os.kill(p, 9)\nprint('k')"
    harness.bash(t, f"python3 -c {shlex.quote(kill)}")
    assert out(harness, t, "print(6 * 7)") == "42\n"
    wait_forked(harness, t)


def test_session_less_python_calls_are_forked_and_share_nothing(harness: Any) -> None:
    """Calls outside a session (a throwaway `oneshot-` session each, closed after the call, as the HTTP API
    does) are forked from the zygote that came with the spare they adopt, and nothing of one — modules,
    environment, signal handlers, limits, files in its private directory — reaches the next."""
    t = "zy-none"

    def once(code: str) -> str:
        session = f"oneshot-{uuid.uuid4().hex}"
        try:
            return out(harness, t, code, session)
        finally:
            harness.run(harness.manager.close_session(t, session))

    deadline = time.monotonic() + 60
    while once("import sys; print(sys.flags.no_user_site)") != "1\n":
        assert time.monotonic() < deadline, "no session-less python call was forked from a spare's zygote"
    home = once(LEAK + "open(os.path.join(os.environ['HOME'], 'private.txt'), 'w').write('x')\n"
                       "print(os.environ['HOME'])").split()[-1]
    session = f"oneshot-{uuid.uuid4().hex}"
    try:
        clean(harness, t, session)
        assert out(harness, t, f"import os; print(os.path.exists({os.path.join(home, 'private.txt')!r}))",
                   session) == "False\n"
    finally:
        harness.run(harness.manager.close_session(t, session))
