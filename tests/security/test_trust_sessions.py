"""Issue 7, sessions do not reach each other and nothing reaches the runner (docs/runner-trust.md §1, §3):
identities, writes into other processes' fds, boot and state poisoning, ptrace and /proc, signals.

Session A attacks; session B (same tenant, same container) is the witness: its calls must be exactly its own.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from trust_support import (
    CALL_TIMEOUT_S,
    GRACE_S,
    PROMPT_S,
    RESULT_TAG,
    Tenant,
    background_output,
    check_all,
    expect,
    in_parallel,
    snippet,
    tenants,
    trust,
    uniq,
    victim_command,
    wait_until,
    without_kill_note,
)

__all__ = ["tenants", "trust"]  # fixtures, imported for pytest

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(240)]

DENIED = {"EPERM", "EACCES"}
INFLIGHT_WAIT_S = CALL_TIMEOUT_S + GRACE_S + 30

# --- identities -----------------------------------------------------------------------------------------------

IDENTITY = r'''
me = status("self")
runner = runner_pid()
emit({"uid": [int(x) for x in me["Uid"].split()], "gid": [int(x) for x in me["Gid"].split()],
      "groups": me.get("Groups", ""), "caps": {k: me[k] for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")},
      "nnp": me.get("NoNewPrivs"), "runner": runner,
      "runner_uid": None if runner is None else [int(x) for x in status(runner)["Uid"].split()],
      "pid1_uid": [int(x) for x in status(1)["Uid"].split()]})
'''


def test_tool_identity_facts(tenants: Any) -> None:
    """A tool process runs with a uid other than the runner's, no capabilities in any set, NoNewPrivs 1; two
    sessions get different uids; the runner (found via /proc) is not owned by the tool's uid; and what one
    session creates in /workspace with default modes the other can write (bash and the file tools)."""
    t: Tenant = tenants("identity")
    u = uniq()
    a, b = t.session(), t.session()
    seen = {}
    problems: list[str] = []
    for name, s in (("A", a), ("B", b)):
        result = t.python(snippet(IDENTITY), s)
        problems += expect(t, result, exit_code=0)
        seen[name] = result.report() or {}
    shell = t.bash("grep -E '^(Uid|CapInh|CapPrm|CapEff|CapAmb|NoNewPrivs):' /proc/self/status", a)
    problems += expect(t, shell, exit_code=0)
    A, B = seen["A"], seen["B"]
    if A.get("runner") is None:
        problems.append(f"no runner process found via /proc: {A}")
    for name, facts in seen.items():
        caps = facts.get("caps", {})
        for key in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
            if int(caps.get(key, "1"), 16) != 0:
                problems.append(f"session {name}: {key} is {caps.get(key)}")
        if facts.get("nnp") != "1":
            problems.append(f"session {name}: NoNewPrivs is {facts.get('nnp')}")
        uids = set(facts.get("uid", [0]))
        if len(uids) != 1 or 0 in uids:
            problems.append(f"session {name}: real/effective/saved/fs uids {facts.get('uid')}")
        runner_uids = set(facts.get("runner_uid") or [])
        if runner_uids & uids:
            problems.append(f"session {name}: tool uid {facts.get('uid')} is the runner's uid "
                            f"{facts.get('runner_uid')}")
    for line in without_kill_note(shell.output).splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Cap") and int(value.strip(), 16) != 0:
            problems.append(f"bash: {line}")
        if key == "NoNewPrivs" and value.strip() != "1":
            problems.append(f"bash: {line}")
        if key == "Uid" and set(value.split()) & {str(x) for x in A.get("runner_uid") or []}:
            problems.append(f"bash: runs as the runner's uid: {line}")
    if A.get("uid") == B.get("uid"):
        problems.append(f"sessions A and B share uid {A.get('uid')}")
    # Shared files: created by A with default modes, changed by B.
    made = t.bash(f"echo a > f-{u}.txt && mkdir d-{u} && echo x > d-{u}/x && echo ok", a)
    problems += expect(t, made, exit_code=0, output="ok\n")
    written = t.call("write_file", {"path": f"w-{u}.txt", "content": "from A\n"}, a)
    problems += expect(t, written, exit_code=0)
    changed = t.bash(f"echo b >> f-{u}.txt && echo y > d-{u}/y && rm d-{u}/x && echo more >> w-{u}.txt && "
                     f"cat f-{u}.txt", b)
    problems += expect(t, changed, exit_code=0, output="a\nb\n")
    edited = t.call("edit_file", {"path": f"w-{u}.txt", "old_string": "from A", "new_string": "from B"}, b)
    problems += expect(t, edited, exit_code=0)
    overwritten = t.call("write_file", {"path": f"f-{u}.txt", "content": "B was here\n"}, b)
    problems += expect(t, overwritten, exit_code=0)
    # The file tools act as the calling session: what each creates is owned by that session's uid.
    fresh = t.call("write_file", {"path": f"wb-{u}.txt", "content": "from B\n"}, b)
    problems += expect(t, fresh, exit_code=0)
    owners = t.bash(f"stat -c %u w-{u}.txt wb-{u}.txt", a)
    problems += expect(t, owners, exit_code=0)
    expected_owners = [str(A.get("uid", [None])[0]), str(B.get("uid", [None])[0])]
    if without_kill_note(owners.output).split() != expected_owners:
        problems.append(f"owners of the files write_file made for A and B: {owners.output.split()}, "
                        f"expected {expected_owners}")
    check_all(problems, f"(A: {A}; B: {B})")


# --- writes into other processes' fds --------------------------------------------------------------------------

# Write a command line and some text into fd 0, 1, 2 and every pipe fd of every process visible in /proc (the
# runner, PID 1, other sessions' shells, REPLs and the waiting process included), while B's call is in flight.
INJECT = r'''
wait_for(CFG["ready"])
payload = ("\n" + CFG["cmd"] + "\n").encode()
me = os.getpid()
opened, refused = [], {}
try:
    for p in pids():
        if p == me:
            continue
        try:
            fds = {int(x) for x in os.listdir(f"/proc/{p}/fd")}
        except OSError as e:
            refused[f"{p}/fd"] = errno.errorcode.get(e.errno, str(e.errno))
            fds = set()
        for fd in sorted(fds | {0, 1, 2}):
            path = f"/proc/{p}/fd/{fd}"
            try:
                link = os.readlink(path)
            except OSError:
                link = None
            if link is not None and not link.startswith("pipe:") and fd > 2:
                continue
            if link is not None and fd <= 2 and not (link.startswith("pipe:") or link.startswith("/dev/pts")):
                continue
            try:
                w = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                refused[path] = errno.errorcode.get(e.errno, str(e.errno))
                continue
            try:
                os.write(w, payload)
                opened.append([p, fd, link, cmdline(p)])
            except OSError as e:
                refused[path] = "write " + errno.errorcode.get(e.errno, str(e.errno))
            finally:
                os.close(w)
finally:
    open(CFG["go"], "w").close()
emit({"opened": opened, "refused": refused})
'''


def test_writes_into_other_processes_fds_do_not_reach_another_session(tenants: Any) -> None:
    """Session A writes a command (which would print INJECTED and create a canary file) into fd 0, 1, 2 and
    every pipe of every process it can see in /proc while B's bash call is in flight and B has a REPL. B's
    in-flight call, its next bash call and its REPL answer exactly their own; A's own next call too; the canary
    never appears."""
    t: Tenant = tenants("inject")
    u = uniq()
    a, b = t.session(), t.session()
    canary = f"/workspace/canary-{u}"
    cmd = f"echo INJECTED-{u}; touch {canary}"
    problems: list[str] = []
    problems += expect(t, t.bash(f"mkdir -p b-{u} && cd b-{u} && export OA_B={u}", b), exit_code=0)
    problems += expect(t, t.call("repl", {"code": f"x = {len(u)}"}, b), exit_code=0)
    problems += expect(t, t.bash("true", a), exit_code=0)  # A has a shell of its own (and its next one waiting)
    ready, go = f"/workspace/ready-{u}", f"/workspace/go-{u}"
    pool, inflight = in_parallel(lambda: t.bash(victim_command(ready, go, f"victim-{u}", f"VICTIM-{u}"), b))
    try:
        injector = t.python(snippet(INJECT, ready=ready, go=go, cmd=cmd), a)
        during = inflight.result(timeout=INFLIGHT_WAIT_S)
    finally:
        pool.shutdown(wait=False)
    marker = f"INJECTED-{u}"
    problems += expect(t, injector, exit_code=0)
    problems += expect(t, during, exit_code=0, output=f"VICTIM-{u}\n", forbidden=(marker,))
    problems += expect(t, t.bash(f'echo B-NEXT-{u}; printf "%s %s\\n" "$PWD" "$OA_B"', b), exit_code=0,
                       output=f"B-NEXT-{u}\n/workspace/b-{u} {u}\n", within=PROMPT_S, forbidden=(marker,))
    problems += expect(t, t.call("repl", {"code": "print(x + 1)"}, b), exit_code=0, output=f"{len(u) + 1}\n",
                       within=PROMPT_S, forbidden=(marker,))
    problems += expect(t, t.bash(f"echo A-NEXT-{u}", a), exit_code=0, output=f"A-NEXT-{u}\n", within=PROMPT_S,
                       forbidden=(marker,))
    look = t.python(f"import os\nprint(os.path.exists({canary!r}))")
    problems += expect(t, look, exit_code=0, output="False\n")
    check_all(problems, f"(injector's report: {injector.report()})")


def test_writes_into_a_python_calls_output_do_not_reach_it_from_another_session(tenants: Any) -> None:
    """A call's output pipes may be reopened by name by its own process (``open('/dev/stdout')``); while B's
    python call waits, A writes into every fd of every process it can open: B's call answers exactly its own
    output, the part written through /dev/stdout included."""
    t: Tenant = tenants("inject-py")
    u = uniq()
    a, b = t.session(), t.session()
    ready, go = f"/workspace/ready-py-{u}", f"/workspace/go-py-{u}"
    marker = f"INJECTED-{u}"
    victim = (f"import os, time\nopen({ready!r}, 'w').close()\ndeadline = time.monotonic() + 60\n"
              f"while not os.path.exists({go!r}) and time.monotonic() < deadline:\n    time.sleep(0.01)\n"
              f"with open('/dev/stdout', 'w') as out:\n    out.write('VICTIM-{u}\\n')\n"
              f"print('PRINTED-{u}', flush=True)\n")
    problems: list[str] = []
    problems += expect(t, t.bash("true", a), exit_code=0)
    pool, inflight = in_parallel(lambda: t.python(victim, b))
    try:
        injector = t.python(snippet(INJECT, ready=ready, go=go, cmd=f"echo {marker}"), a)
        during = inflight.result(timeout=INFLIGHT_WAIT_S)
    finally:
        pool.shutdown(wait=False)
    problems += expect(t, injector, exit_code=0)
    problems += expect(t, during, exit_code=0, output=f"VICTIM-{u}\nPRINTED-{u}\n", forbidden=(marker,))
    check_all(problems, f"(injector's report: {injector.report()})")


# The injector as a session's own background job: for each round, wait for the round's victim to say it is
# ready (its pid in the ready file), write into fd 0-2 of every process, let the victim go; a report per round.
INJECT_ROUNDS = r'''
for ready, go in CFG["rounds"]:
    opened, refused = [], {}
    wait_for(ready)
    mine = {os.getpid(), os.getppid()}  # the job itself and the shell that runs it
    try:
        for p in pids():
            if p in mine:
                continue
            for fd in (0, 1, 2):
                path = f"/proc/{p}/fd/{fd}"
                try:
                    w = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                except OSError as e:
                    refused[path] = [errno.errorcode.get(e.errno, str(e.errno)), cmdline(p)]
                    continue
                try:
                    os.write(w, ("\n" + CFG["cmd"] + "\n").encode())
                    opened.append([p, fd, cmdline(p)])
                except OSError as e:
                    refused[path] = ["write " + errno.errorcode.get(e.errno, str(e.errno)), cmdline(p)]
                finally:
                    os.close(w)
    finally:
        with open(ready) as f:
            victim = f.read().strip()
        open(go, "w").close()
    emit({"opened": opened, "refused": refused, "victim": victim})
'''


@pytest.mark.timeout(240)
def test_a_sessions_background_job_cannot_write_into_its_later_calls_output(tenants: Any) -> None:
    """A `run_in_background` job of session A waits for each of A's next calls — bash, a first python call
    (a fresh interpreter) and a later one (forked from the session's zygote, once it runs) — and writes a
    payload into fd 0, 1 and 2 of every process it can open: each call answers exactly its own output, in the
    API and the audit, and the job's own report shows it found the call's process and was refused (each call's
    processes are in a Landlock domain of their own, out of ptrace reach of the job's)."""
    t: Tenant = tenants("inject-bg")
    u = uniq()
    a = t.session()
    marker = f"INJECTED-{u}"
    rounds = [(f"/workspace/ready-bg-{u}-{i}", f"/workspace/go-bg-{u}-{i}") for i in range(3)]
    problems: list[str] = []
    code = snippet(INJECT_ROUNDS, rounds=rounds, cmd=f"echo {marker}")
    wrote = t.call("write_file", {"path": f"inject-{u}.py", "content": code}, a)
    assert wrote.status == 200 and wrote.error_code is None, wrote.brief()
    job = t.background(f"python3 inject-{u}.py", a)

    def python_victim(i: int) -> str:
        ready, go = rounds[i]
        return (f"import os, time\nwith open({ready!r}, 'w') as f:\n    f.write(str(os.getpid()))\n"
                f"deadline = time.monotonic() + 60\n"
                f"while not os.path.exists({go!r}) and time.monotonic() < deadline:\n    time.sleep(0.01)\n"
                f"with open('/dev/stdout', 'w') as out:\n    out.write('VICTIM-{u}-{i}\\n')\n"
                f"print('PRINTED-{u}-{i}', flush=True)\n")

    ready, go = rounds[0]
    waiter = victim_command(ready + ".bash", go, f"victim-{u}", f"VICTIM-{u}-0")
    first = t.bash(f"echo $BASHPID > {ready}; {waiter}", a)
    problems += expect(t, first, exit_code=0, output=f"VICTIM-{u}-0\n", forbidden=(marker,))
    forked = "import sys\nwith open('/proc/self/cmdline', 'rb') as f:\n    print(b'\\0-c\\0' in f.read())\n"
    for i in (1, 2):
        if i == 2:  # the session's zygote starts after its first python call: wait until calls are its forks
            wait_until(lambda: t.python(forked, a).output == "True\n", 60, "python calls forked from the zygote")
        victim = t.python(python_victim(i), a)
        problems += expect(t, victim, exit_code=0, output=f"VICTIM-{u}-{i}\nPRINTED-{u}-{i}\n", forbidden=(marker,))
    output, _ = background_output(t, job, a)
    reports = [json.loads(line[len(RESULT_TAG):]) for line in output.splitlines() if line.startswith(RESULT_TAG)]
    if len(reports) != 3:
        problems.append(f"the job reported {len(reports)} rounds, not 3: {output[:1500]!r}")
    for i, report in enumerate(reports):
        if report["opened"]:
            problems.append(f"round {i}: the job opened {report['opened']}")
        if f"/proc/{report['victim']}/fd/1" not in report["refused"]:
            problems.append(f"round {i}: the job was not refused the victim's stdout (pid {report['victim']}): "
                            f"{report['refused']}")
    if len(reports) == 3 and " -s -c " not in str(reports[2]["refused"].get(f"/proc/{reports[2]['victim']}/fd/1")):
        problems.append(f"the last victim was not forked from the session's zygote: {reports[2]['refused']}")
    check_all(problems)


# --- boot and state poisoning --------------------------------------------------------------------------------

# Append (and prepend) a payload to every file it can write outside /workspace — /tmp, /dev/shm, /run, /var/tmp,
# every tmpfs, the dirs named in any visible argv, environment, cwd or open fd — replace every file in a dir it can
# write, and drop a script into every dir it can write.
POISON = r'''
import stat
payload = "\n" + CFG["cmd"] + "\n"
me = os.getpid()
roots = {"/tmp", "/dev/shm", "/run", "/var/tmp", "/var/run", "/home", "/root"}
try:
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2] == "tmpfs":
                roots.add(parts[1])
except OSError:
    pass
for p in pids():
    if p == me:
        continue
    for a in argv(p) or []:
        for piece in a.replace("=", " ").split():
            if piece.startswith("/") and not piece.startswith(("/proc", "/sys", "/workspace", "/usr", "/bin", "/lib")):
                roots.add(piece if os.path.isdir(piece) else os.path.dirname(piece))
    try:
        with open(f"/proc/{p}/environ", "rb") as f:
            for item in f.read().split(b"\0"):
                v = item.partition(b"=")[2].decode("utf-8", "replace")
                if v.startswith("/") and not v.startswith(("/proc", "/sys", "/workspace")):
                    for piece in v.split(":"):
                        roots.add(piece if os.path.isdir(piece) else os.path.dirname(piece))
    except OSError:
        pass
    for link in ("cwd", "root"):
        try:
            roots.add(os.readlink(f"/proc/{p}/{link}"))
        except OSError:
            pass
    try:
        for fd in os.listdir(f"/proc/{p}/fd"):
            try:
                target = os.readlink(f"/proc/{p}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("/") and not target.startswith(("/proc", "/sys", "/workspace", "/dev/null")):
                roots.add(target if os.path.isdir(target) else os.path.dirname(target))
    except OSError:
        pass
roots = {r for r in roots if r and r != "/" and not r.startswith(("/proc", "/sys", "/workspace"))}
files, dirs = set(), set()
for root in sorted(roots):
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: None):
        if dirpath.startswith(("/proc", "/sys", "/workspace")):
            dirnames[:] = []
            continue
        dirs.add(dirpath)
        for n in filenames:
            files.add(os.path.join(dirpath, n))
appended, rewritten, replaced, dropped = [], [], [], []
for path in sorted(files):
    try:
        st = os.lstat(path)
    except OSError:
        continue
    if not stat.S_ISREG(st.st_mode):
        continue
    try:
        with open(path, "r+b") as f:
            old = f.read()
            f.seek(0)
            f.write(payload.encode() + old + payload.encode())
            f.truncate()
        rewritten.append(path)
        continue
    except OSError:
        pass
    try:
        with open(path, "ab") as f:
            f.write(payload.encode())
        appended.append(path)
    except OSError:
        pass
for d in sorted(dirs):
    mine = os.path.join(d, f".oa-poison-{me}")
    try:
        with open(mine, "w") as f:
            f.write(payload)
    except OSError:
        continue
    dropped.append(d)
    for n in os.listdir(d):
        target = os.path.join(d, n)
        if target == mine or not os.path.isfile(target) or os.path.islink(target):
            continue
        copy = os.path.join(d, f".oa-poison-{me}-{len(replaced)}")
        try:
            with open(target, "rb") as f:
                old = f.read()
            with open(copy, "wb") as f:
                f.write(payload.encode() + old + payload.encode())
            os.replace(copy, target)
            replaced.append(target)
        except OSError:
            try:
                os.unlink(copy)
            except OSError:
                pass
emit({"roots": sorted(roots), "files": len(files), "rewritten": rewritten, "appended": appended,
      "replaced": replaced, "dropped_in": dropped})
'''


def test_boot_and_state_poisoning_does_not_run_in_another_session(tenants: Any) -> None:
    """B sets a cwd and an exported variable. A writes a payload (create a canary, change B's variable, cd /)
    into every file it can write outside /workspace: /tmp, the runner's dirs and boot file, other sessions'
    state. Then B's next calls — after B's shell ends itself with `exit 0`, and a brand-new session's first
    call — have B's own cwd and variable, and the canary never appears."""
    t: Tenant = tenants("poison")
    u = uniq()
    a, b = t.session(), t.session()
    canary = f"/workspace/canary-{u}"
    cmd = f"touch {canary}; export OA_B_VAR=poisoned; builtin cd /"
    problems: list[str] = []
    problems += expect(t, t.bash(f"mkdir -p b-{u} && cd b-{u} && export OA_B_VAR=b-{u}", b), exit_code=0)
    problems += expect(t, t.bash(f"mkdir -p a-{u} && cd a-{u}", a), exit_code=0)
    poisoner = t.python(snippet(POISON, cmd=cmd), a)
    problems += expect(t, poisoner, exit_code=0)
    state = 'printf "%s %s\\n" "$PWD" "$OA_B_VAR"'
    expected = f"/workspace/b-{u} b-{u}\n"
    problems += expect(t, t.bash(state, b), exit_code=0, output=expected, within=PROMPT_S)
    problems += expect(t, t.bash(f"echo B-EXIT-{u}; exit 0", b), exit_code=0, output=f"B-EXIT-{u}\n")
    problems += expect(t, t.bash(state, b), exit_code=0, output=expected, within=PROMPT_S)
    problems += expect(t, t.call("repl", {"code": "print('repl-ok')"}, b), exit_code=0, output="repl-ok\n")
    c = t.session()
    problems += expect(t, t.bash(f'echo C-{u}; printf "%s\\n" "$PWD"', c), exit_code=0,
                       output=f"C-{u}\n/workspace\n", within=PROMPT_S)
    problems += expect(t, t.bash("echo oneshot"), exit_code=0, output="oneshot\n")
    look = t.python(f"import os\nprint(os.path.exists({canary!r}))")
    problems += expect(t, look, exit_code=0, output="False\n")
    report = poisoner.report() or {}
    check_all(problems, f"(poisoner wrote: rewritten {report.get('rewritten')}, appended {report.get('appended')}, "
                        f"replaced {report.get('replaced')}, dropped into {report.get('dropped_in')})")


# --- ptrace and /proc ----------------------------------------------------------------------------------------

PROBE = r'''
import ctypes, signal
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long
PTRACE_ATTACH, PTRACE_DETACH, PTRACE_SEIZE = 16, 17, 0x4206
SYS_pidfd_getfd = 438  # the same number on x86_64 and aarch64

def err(e):
    return errno.errorcode.get(e, str(e))

def try_(fn):
    try:
        fn()
        return "OK"
    except OSError as e:
        return err(e.errno)

def attach(pid, request):
    ctypes.set_errno(0)
    if libc.ptrace(request, pid, None, None) == 0:
        if request == PTRACE_ATTACH:
            try:
                os.waitpid(pid, 0x40000000)  # __WALL: the tracee stops, then we let it go
            except OSError:
                pass
        libc.ptrace(PTRACE_DETACH, pid, None, None)
        try:
            os.kill(pid, signal.SIGCONT)  # the other threads of a group-stopped process
        except OSError:
            pass
        return "OK"
    return err(ctypes.get_errno())

def read_mem(pid):
    os.close(os.open(f"/proc/{pid}/mem", os.O_RDONLY))  # opening is the access; a read of address 0 says EIO

def read_file(path):
    with open(path, "rb") as f:
        f.read(4096)

def fds(pid):
    out = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
        out["list"] = "OK"
    except OSError as e:
        out["list"] = err(e.errno)
        names = ["0", "1", "2", "3", "4", "5"]
    for n in names:
        try:
            os.close(os.open(f"/proc/{pid}/fd/{n}", os.O_RDONLY | os.O_NONBLOCK))
            out[n] = "OK"
        except OSError as e:
            out[n] = err(e.errno)
    return out

def getfd(pid):
    pidfd = os.pidfd_open(pid)
    try:
        for n in range(0, 8):
            ctypes.set_errno(0)
            r = libc.syscall(SYS_pidfd_getfd, pidfd, n, 0)
            if r >= 0:
                os.close(r)
                return "OK"
            e = ctypes.get_errno()
            if e != errno.EBADF:
                return err(e)
        return "EBADF"
    finally:
        os.close(pidfd)

class IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

def vm_read(pid):
    buf = ctypes.create_string_buffer(8)
    local = IOVec(ctypes.cast(buf, ctypes.c_void_p), 8)
    remote = IOVec(0x400000, 8)
    ctypes.set_errno(0)
    r = libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    return "OK" if r >= 0 else err(ctypes.get_errno())

wait_for(CFG["ready"])
me = os.getpid()
runner = runner_pid()
# The victim's shell announces `ready` just before it starts the marked process: wait for that to exist.
deadline = time.monotonic() + 30
victims = [p for p, *_ in marked(CFG["mark"])]
while not victims and time.monotonic() < deadline:
    time.sleep(0.01)
    victims = [p for p, *_ in marked(CFG["mark"])]
targets = {1: "pid1"}
if runner is not None:
    targets[runner] = "runner"
for v in victims:
    targets[v] = "victim"
    s = status(v)
    if s and int(s["PPid"]) not in targets and int(s["PPid"]) != 0:
        targets[int(s["PPid"])] = "victim-parent"
myuid = os.getuid()
for p in pids():
    if p != me and p not in targets and uid_of(p) not in (None, myuid):
        targets[p] = "foreign-uid"
out = {}
try:
    for p, role in targets.items():
        out[str(p)] = {
            "role": role, "uid": uid_of(p), "cmd": (cmdline(p) or "")[:120],
            "ptrace_attach": attach(p, PTRACE_ATTACH),
            "ptrace_seize": attach(p, PTRACE_SEIZE),
            "mem": try_(lambda: read_mem(p)),
            "environ": try_(lambda: read_file(f"/proc/{p}/environ")),
            "maps": try_(lambda: read_file(f"/proc/{p}/maps")),
            "cwd": try_(lambda: os.listdir(f"/proc/{p}/cwd")),
            "root": try_(lambda: os.listdir(f"/proc/{p}/root")),
            "fd": fds(p),
            "pidfd_getfd": getfd(p),
            "process_vm_readv": vm_read(p),
        }
finally:
    open(CFG["go"], "w").close()
with open("/proc/mounts") as f:
    hidepid = any(line.split()[1] == "/proc" and "hidepid" in line for line in f)
emit({"me": me, "uid": myuid, "targets": out, "hidepid": hidepid})
'''


def test_ptrace_and_proc_access_to_the_runner_and_other_sessions_fail(tenants: Any) -> None:
    """From a `python` call: PTRACE_ATTACH / PTRACE_SEIZE, /proc/<pid>/mem, environ, maps, cwd, root, fd/*,
    pidfd_getfd and process_vm_readv against PID 1, the runner and another session's in-flight processes all
    fail with EPERM or EACCES (as the tool's own output shows), and the API still answers both sessions."""
    t: Tenant = tenants("ptrace")
    u = uniq()
    a, b = t.session(), t.session()
    mark = f"victim-{u}"
    ready, go = f"/workspace/ready-{u}", f"/workspace/go-{u}"
    problems: list[str] = []
    problems += expect(t, t.bash(f"export OA_B={u}", b), exit_code=0)
    pool, inflight = in_parallel(lambda: t.bash(victim_command(ready, go, mark, f"VICTIM-{u}"), b))
    try:
        probe = t.python(snippet(PROBE, ready=ready, go=go, mark=mark), a)
        during = inflight.result(timeout=INFLIGHT_WAIT_S)
    finally:
        pool.shutdown(wait=False)
    problems += expect(t, probe, exit_code=0)
    problems += expect(t, during, exit_code=0, output=f"VICTIM-{u}\n")
    problems += expect(t, t.bash('printf "%s\\n" "$OA_B"', b), exit_code=0, output=f"{u}\n", within=PROMPT_S)
    problems += expect(t, t.bash("echo a-ok", a), exit_code=0, output="a-ok\n", within=PROMPT_S)
    report = probe.report() or {}
    targets = report.get("targets", {})
    roles = {v["role"] for v in targets.values()}
    if not report.get("hidepid"):
        for needed in ("runner", "victim"):
            if needed not in roles:
                problems.append(f"the probe did not find the {needed} in /proc (roles seen: {sorted(roles)})")
    for pid, facts in targets.items():
        allowed = []
        for check, outcome in facts.items():
            if check in ("role", "uid", "cmd"):
                continue
            outcomes = outcome.items() if isinstance(outcome, dict) else [("", outcome)]
            for sub, value in outcomes:
                if value in DENIED:
                    continue
                if value in ("ESRCH", "ENOENT") and facts["role"] == "foreign-uid":
                    continue  # a process that ended meanwhile
                if check == "fd" and sub != "list" and value == "ENOENT":
                    continue  # an fd number the process does not have
                if check == "pidfd_getfd" and value == "EBADF":
                    continue
                allowed.append(f"{check}{'/' + sub if sub else ''}={value}")
        if allowed:
            problems.append(f"{facts['role']} pid {pid} (uid {facts['uid']}, {facts['cmd'][:50]!r}) not refused: "
                            + ", ".join(allowed))
    check_all(problems)


# --- signals -------------------------------------------------------------------------------------------------

SIGNAL = r'''
import signal
sig = CFG["sig"]
me = os.getpid()
runner = runner_pid()
out = []
for p in pids():
    if p == me:
        continue
    uid, cmd = uid_of(p), (cmdline(p) or "")[:100]
    role = "pid1" if p == 1 else "runner" if p == runner else "other"
    try:
        os.kill(p, sig)
        out.append([p, uid, role, cmd, "OK"])
    except OSError as e:
        out.append([p, uid, role, cmd, errno.errorcode.get(e.errno, str(e.errno))])
try:
    os.kill(-1, sig)
    everyone = "OK"
except OSError as e:
    everyone = errno.errorcode.get(e.errno, str(e.errno))
emit({"me": me, "uid": os.getuid(), "sent": out, "kill_minus_1": everyone})
'''


@pytest.mark.parametrize("sig", ["SIGSTOP", "SIGTERM", "SIGKILL"])
def test_signals_to_every_other_process_do_not_disturb_the_tenant(tenants: Any, sig: str) -> None:
    """Session A sends SIGSTOP / SIGTERM / SIGKILL to every other pid it can see (PID 1, the runner, B's shell
    and its waiting next shell, its own session's waiting shell) and to -1. A's call answers; then A's and B's
    next calls (cwd and exported variable kept) and a fresh call answer promptly with exactly their results.
    Signals to processes of another uid fail with EPERM."""
    import signal as signals

    t: Tenant = tenants(f"signal-{sig.lower()}")
    u = uniq()
    a, b = t.session(), t.session()
    problems: list[str] = []
    for name, s in (("a", a), ("b", b)):
        problems += expect(t, t.bash(f"mkdir -p {name}-{u} && cd {name}-{u} && export OA_S={name}-{u}", s), exit_code=0)
    problems += expect(t, t.call("repl", {"code": "y = 5"}, b), exit_code=0)
    sender = t.python(snippet(SIGNAL, sig=int(getattr(signals, sig))), a, timeout_s=10)
    if sender.status != 200 or sender.elapsed > 10 + GRACE_S + 10:
        problems.append(f"the sender's call did not answer in time: {sender.brief()}")
    state = 'printf "%s %s\\n" "$PWD" "$OA_S"'
    for name, s in (("a", a), ("b", b)):
        problems += expect(t, t.bash(state, s, timeout_s=10), exit_code=0,
                           output=f"/workspace/{name}-{u} {name}-{u}\n", within=PROMPT_S)
    problems += expect(t, t.call("repl", {"code": "print(y * 2)", "timeout_s": 10}, b), exit_code=0,
                       output="10\n", within=PROMPT_S)
    problems += expect(t, t.bash(f"echo fresh-{u}", timeout_s=10), exit_code=0, output=f"fresh-{u}\n",
                       within=PROMPT_S)
    report = sender.report() or {}
    my_uid = report.get("uid")
    for pid, uid, role, cmd, outcome in report.get("sent", []):
        if uid is not None and uid != my_uid and outcome not in ("EPERM", "ESRCH"):
            problems.append(f"{sig} to {role} pid {pid} (uid {uid}, {cmd[:60]!r}) -> {outcome}")
    check_all(problems, f"(sender's report: {report})")


# --- private files of a closed session ------------------------------------------------------------------------

FIND_SECRET = r'''
token = CFG["parts"][0] + CFG["parts"][1]
found = []
for top in ("/tmp", "/dev/shm", "/run", "/var/tmp", "/home"):
    for dirpath, dirnames, filenames in os.walk(top, onerror=lambda e: None):
        for n in filenames:
            path = os.path.join(dirpath, n)
            try:
                if os.path.islink(path) or os.path.getsize(path) > 1 << 20:
                    continue
                with open(path, "rb") as f:
                    if token.encode() in f.read():
                        found.append(path)
            except OSError:
                pass
emit({"uid": os.getuid(), "found": found})
'''


def test_new_sessions_cannot_read_a_deleted_sessions_private_files(tenants: Any) -> None:
    """Session A exports a secret (its saved state) and writes it, readable by its uid alone, to a file in its
    private $HOME and in the shared /tmp (also in a directory of its own there) and /dev/shm; A is
    deleted. Sessions created afterwards (any of which may be handed A's old uid) find the secret in no file
    they can read under /tmp, /dev/shm, /run, /var/tmp or /home; the System V shared memory segment, message
    queue and semaphore set A made (mode 0600) are gone with it."""
    t: Tenant = tenants("recycle")
    u = uniq()
    secret = f"SECRET-{u}"
    a = t.session()
    problems: list[str] = []
    problems += expect(t, t.bash(f'export OA_SECRET={secret}; umask 077; echo {secret} > "$HOME/.oa-secret-{u}"; '
                                 f'mkdir -p /tmp/oa-dir-{u}; for d in /tmp /tmp/oa-dir-{u} /dev/shm; do '
                                 f'echo {secret} > "$d/oa-secret-{u}"; done', a), exit_code=0)
    ipc = t.python("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                   "ids = [libc.shmget(0, 4096, 0o1600), libc.msgget(0, 0o1600), libc.semget(0, 1, 0o1600)]\n"
                   "print(os.getuid(), *ids)\n", a)
    problems += expect(t, ipc, exit_code=0)
    a_uid, *made = (int(x) for x in ipc.output.split())
    if min(made) < 0:
        problems.append(f"session A could not make its System V objects: {ipc.output!r}")
    problems += expect(t, t.bash("true", a), exit_code=0)
    if t.delete_session(a) != 204:
        problems.append("DELETE /sessions/{id} did not answer 204")
    left = t.python("import glob\nfor p in sorted(glob.glob('/proc/sysvipc/*')):\n"
                    "    rows = [r.split() for r in open(p).read().splitlines()]\n"
                    "    at = rows[0].index('uid')\n"
                    f"    print(p, sum(r[at] == '{a_uid}' for r in rows[1:]))\n")
    if left.output != "".join(f"/proc/sysvipc/{kind} 0\n" for kind in ("msg", "sem", "shm")):
        problems.append(f"System V objects of the deleted session's uid {a_uid} remain: {left.output!r}")
    for _ in range(4):
        s = t.session()
        probe = t.python(snippet(FIND_SECRET, parts=["SECRET-", u]), s)
        problems += expect(t, probe, exit_code=0)
        report = probe.report() or {}
        if report.get("found"):
            problems.append(f"a new session (uid {report.get('uid')}) reads the deleted session's secret in "
                            f"{report['found']}")
    oneshot = t.python(snippet(FIND_SECRET, parts=["SECRET-", u]))
    if (oneshot.report() or {}).get("found"):
        problems.append(f"a one-shot call reads the deleted session's secret in {oneshot.report()['found']}")
    check_all(problems)


# --- /tmp is shared: filling it must not cost another session its state ----------------------------------------


def test_a_full_tmp_does_not_lose_another_sessions_cwd_and_exports(tenants: Any) -> None:
    """Session A fills the shared /tmp to the last byte and leaves it full. Session B keeps working: a call
    that changes its cwd and exports is followed by one that sees the new values (they persist per session
    whatever another session does to the shared tmpfs)."""
    t: Tenant = tenants("tmpfull")
    u = uniq()
    a, b = t.session(), t.session()
    problems: list[str] = []
    problems += expect(t, t.bash(f"mkdir -p b1-{u} b2-{u} && cd b1-{u} && export OA_ONE=1-{u}", b), exit_code=0)
    fill = t.bash("cat /dev/zero > /tmp/oa-fill-$$ 2>/dev/null; df -P /tmp | tail -1 | awk '{print $4}'", a)
    if fill.status != 200 or without_kill_note(fill.output).strip() != "0":
        problems.append(f"/tmp not full after A's call: {fill.brief()}")
    problems += expect(t, t.bash('printf "%s %s\\n" "$PWD" "$OA_ONE"', b), exit_code=0,
                       output=f"/workspace/b1-{u} 1-{u}\n", within=PROMPT_S)
    problems += expect(t, t.bash(f"cd ../b2-{u} && export OA_TWO=2-{u}", b), exit_code=0, within=PROMPT_S)
    problems += expect(t, t.bash('printf "%s %s %s\\n" "$PWD" "$OA_ONE" "$OA_TWO"', b), exit_code=0,
                       output=f"/workspace/b2-{u} 1-{u} 2-{u}\n", within=PROMPT_S)
    problems += expect(t, t.bash("rm -f /tmp/oa-fill-*; echo freed", a), exit_code=0, output="freed\n")
    check_all(problems)
