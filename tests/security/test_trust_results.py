"""Issue 7, results the command cannot forge (docs/runner-trust.md §2): a call's exit code and output are the
process's own, whatever the code writes into the runner's streams, prints in the shell or redefines in it.

Each test checks the API's answer and the tool's audit `finished` record.
"""

from __future__ import annotations

from typing import Any

import pytest
from trust_support import (
    CALL_TIMEOUT_S,
    GRACE_S,
    PROMPT_S,
    Tenant,
    check_all,
    expect,
    in_parallel,
    snippet,
    tenants,
    trust,
    uniq,
    victim_command,
)

__all__ = ["tenants", "trust"]  # fixtures, imported for pytest

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

# Forge runner frames (toolrunner/protocol.py: 4-byte big-endian length + JSON) claiming success for call ids
# 1..N, into PID 1's stdout, every process's fd 1 and the runner's protocol stdout (the fds of the runner that
# are the same pipe as PID 1's stdout; where that cannot be read, every write end the runner holds). Each frame
# is written in one write(2) of less than PIPE_BUF bytes, so it lands whole or not at all.
FORGE = r'''
import select, struct

def frame(obj):
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body

def frames():
    tag = CFG["tag"]
    for i in range(1, CFG["ids"] + 1):
        yield frame({"type": "chunk", "id": i, "stream": "stdout", "data": f"{tag} chunk for id {i}\n"})
        yield frame({"type": "result", "id": i, "result": {
            "tool_name": CFG["tool"], "output": f"{tag} result for id {i}\n", "exit_code": 0,
            "duration_ms": 1.0, "truncated": False, "timed_out": False, "limit": None, "error": None}})

def write_all(path):
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    written = 0
    try:
        for data in frames():
            deadline = time.monotonic() + 2
            while True:
                try:
                    os.write(fd, data)
                    written += 1
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        return f"stalled after {written} frames"
                    select.select([], [fd], [], 0.2)
    except OSError as e:
        return f"{errno.errorcode.get(e.errno, e.errno)} after {written} frames"
    finally:
        os.close(fd)
    return f"wrote {written} frames"

if CFG.get("ready"):
    wait_for(CFG["ready"])
me = os.getpid()
targets = {"/proc/1/fd/1"}
for p in pids():
    if p != me:
        targets.add(f"/proc/{p}/fd/1")
runner = runner_pid()
try:
    proto = os.readlink("/proc/1/fd/1")
except OSError:
    proto = None
found = "unreadable"
if runner is not None:
    try:
        fds = os.listdir(f"/proc/{runner}/fd")
        found = "listed"
    except OSError as e:
        fds = []
        found = errno.errorcode.get(e.errno, str(e.errno))
    for fd in fds:
        path = f"/proc/{runner}/fd/{fd}"
        try:
            link = os.readlink(path)
            mode = os.lstat(path).st_mode
        except OSError:
            continue
        if link == proto or (proto is None and link.startswith("pipe:") and mode & 0o200):
            targets.add(path)
results = {}
try:
    for t in sorted(targets):
        results[t] = write_all(t)
finally:
    if CFG.get("go"):
        open(CFG["go"], "w").close()
emit({"runner": runner, "runner_fds": found, "targets": results})
sys.exit(3)
'''


def test_forged_result_frames_do_not_become_any_calls_result(tenants: Any) -> None:
    """A `python` call writes well-formed result and chunk frames claiming exit 0 for ids 1..400 into every
    stdout it can open (PID 1's, each process's fd 1, the runner's protocol stdout), while a call of another
    session is in flight, then exits 3. The forger's answer says 3 with its real output; the other session's
    in-flight call and its later calls (plain and streamed) are exactly their own."""
    t: Tenant = tenants("forge")
    u = uniq()
    tag = f"FORGED-{u}"
    attacker, victim = t.session(), t.session()
    assert t.bash("true", victim).exit_code == 0
    ready, go = f"/workspace/ready-{u}", f"/workspace/go-{u}"
    pool, inflight = in_parallel(lambda: t.bash(victim_command(ready, go, f"victim-{u}", f"VICTIM-{u}"), victim))
    try:
        forged = t.python(snippet(FORGE, tag=tag, ids=400, tool="bash", ready=ready, go=go), attacker)
        during = inflight.result(timeout=CALL_TIMEOUT_S + GRACE_S + 30)
    finally:
        pool.shutdown(wait=False)
    problems = expect(t, forged, exit_code=3, forbidden=(tag,))
    if forged.report() is None:
        problems.append(f"the forger's real output is missing: {forged.brief()}")
    problems += expect(t, during, exit_code=0, output=f"VICTIM-{u}\n", forbidden=(tag,))
    problems += expect(t, t.bash(f"echo LATER-{u}; exit 4", victim), exit_code=4, output=f"LATER-{u}\n",
                       forbidden=(tag,))
    chunks, streamed = t.stream("bash", {"command": f"echo STREAMED-{u}"}, victim)
    problems += expect(t, streamed, exit_code=0, output=f"STREAMED-{u}\n", forbidden=(tag,))
    if chunks != f"STREAMED-{u}\n":
        problems.append(f"streamed chunks {chunks[:400]!r}, expected {f'STREAMED-{u}' + chr(10)!r}")
    fresh = t.python(f"print('FRESH-{u}')\nraise SystemExit(2)")
    problems += expect(t, fresh, exit_code=2, output=f"FRESH-{u}\n", forbidden=(tag,))
    check_all(problems, f"(forger's report: {forged.report()})")


# Forged *requests*: `cancel` frames for ids 1..400 and a `close_session` for every name the attacker could guess,
# into every fd of the runner and of PID 1 it can open for writing, while another session's call is in flight.
FORGE_REQUESTS = r'''
import struct

def frame(obj):
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body

wait_for(CFG["ready"])
data = [frame({"type": "cancel", "id": i}) for i in range(1, 401)]
data += [frame({"type": "close_session", "id": 10**9 + i, "session": s}) for i, s in enumerate(CFG["sessions"])]
results = {}
try:
    for p in {1, runner_pid()} - {None}:
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError as e:
            results[f"/proc/{p}/fd"] = errno.errorcode.get(e.errno, str(e.errno))
            fds = ["0", "1", "2"]
        for fd in fds:
            path = f"/proc/{p}/fd/{fd}"
            try:
                target = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                results[path] = errno.errorcode.get(e.errno, str(e.errno))
                continue
            n = 0
            try:
                for d in data:
                    try:
                        os.write(target, d)
                        n += 1
                    except BlockingIOError:
                        pass
            except OSError as e:
                results[path] = f"{errno.errorcode.get(e.errno, e.errno)} after {n}"
            else:
                results[path] = f"wrote {n}"
            finally:
                os.close(target)
finally:
    open(CFG["go"], "w").close()
emit(results)
'''


def test_forged_request_frames_do_not_reach_the_runner(tenants: Any) -> None:
    """Tool code writes `cancel` and `close_session` frames into every fd of the runner (and PID 1) it can
    open, while another session's call is in flight: that call and the session's next call are exactly their
    own (the runner's request stream is the attach stream, which tools cannot open)."""
    t: Tenant = tenants("forge-req")
    u = uniq()
    attacker, victim = t.session(), t.session()
    assert t.bash(f"mkdir -p v-{u} && cd v-{u} && export OA_V={u}", victim).exit_code == 0
    ready, go = f"/workspace/ready-{u}", f"/workspace/go-{u}"
    pool, inflight = in_parallel(lambda: t.bash(victim_command(ready, go, f"victim-{u}", f"VICTIM-{u}"), victim))
    try:
        forger = t.python(snippet(FORGE_REQUESTS, ready=ready, go=go, sessions=[victim, attacker]), attacker)
        during = inflight.result(timeout=CALL_TIMEOUT_S + GRACE_S + 30)
    finally:
        pool.shutdown(wait=False)
    problems = expect(t, forger, exit_code=0)
    problems += expect(t, during, exit_code=0, output=f"VICTIM-{u}\n")
    after = t.bash('pwd; printf "%s\\n" "$OA_V"', victim)
    problems += expect(t, after, exit_code=0, output=f"/workspace/v-{u}\n{u}\n", within=PROMPT_S)
    check_all(problems, f"(forger's report: {forger.report()})")


# Shell attacks on a bash session: each is followed by an ending with a known exit status.
SHELL_ATTACKS = {
    # What the old end marker looked like (NUL, 16 hex, rc, saved, LF), with a made-up token and with the
    # shell's own token where it can be read, on stdout, stderr and the fds the old shell kept for it.
    "end_markers": r"""
tok=${__oa_tok:-0123456789abcdef}
printf '\0%s 0 0\n' "$tok"; printf '\0%s 0 0\n' "$tok" >&2
printf '\0%s 0 0\n' 0123456789abcdef; printf '\0%s 0 0\n' 0123456789abcdef >&2
{ printf '\0%s 0 0\n' "$tok" >&62; printf '\0%s 0 0\n' "$tok" >&63; } 2>/dev/null
""",
    # Replace every __oa_* function (and the old per-call eval string) with ones that claim success.
    "redefined_functions": r"""
forge() { builtin printf '\0%s 0 0\n' "${__oa_tok:-0123456789abcdef}"
  builtin printf '\0%s 0 0\n' "${__oa_tok:-0123456789abcdef}" >&2; }
for f in $(compgen -A function __oa_) __oa_end __oa_in __oa_save __oa_boot __oa_run __oa_exit __oa_state; do
  eval "$f() { forge; forge >&62; forge >&63; return 0; } 2>/dev/null"
done
__oa_run='forge; echo HIJACKED'
""",
    # Traps that print end markers or text before/after every command, and ignore the usual stop signals.
    "traps": r"""
trap 'printf "\0%s 0 0\n" "${__oa_tok:-0123456789abcdef}"; echo TRAP-LEAK' DEBUG RETURN ERR
trap '' TERM HUP INT QUIT PIPE USR1 USR2
set -T
""",
    # Move the shell's stdout and stderr away for good.
    "exec_redirect": r"""
exec >/tmp/oa-redirected.$$ 2>&1
echo hidden
""",
    # Close or divert every fd the old shell used for its markers (62, 63) and its stdout/stderr.
    "close_fds": r"""
exec 62>/dev/null 63>/dev/null 2>/dev/null
exec 1>/dev/null
""",
    # Shell options and aliases that would change later calls' output.
    "options_and_aliases": r"""
shopt -s expand_aliases extdebug
alias echo='echo ALIASED'
alias printf='printf ALIASED'
set -x -v -o pipefail
PS4='+TRACE-LEAK '
""",
}
ENDINGS = {"exit 7": 7, "false": 1}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("ending", list(ENDINGS))
@pytest.mark.parametrize("attack", list(SHELL_ATTACKS))
def test_shell_tricks_do_not_change_exit_codes_or_later_calls(tenants: Any, attack: str, ending: str) -> None:
    """In a bash session: forged end markers, redefined `__oa_*` functions, traps, `exec >file`, closed fds or
    options, then `exit 7` / `false`. The call's exit code is the real one (7 / 1), and the session's next
    calls report their own exit codes and exactly their own output."""
    t: Tenant = tenants("shell")
    u = uniq()
    s = t.session()
    assert t.bash(f"mkdir -p d-{u} && cd d-{u} && export OA_KEEP={u}", s).exit_code == 0
    attacked = t.bash(SHELL_ATTACKS[attack] + ending, s, timeout_s=10)
    problems = expect(t, attacked, exit_code=ENDINGS[ending])
    later = [
        (f"echo AFTER1-{u}; false", 1, f"AFTER1-{u}\n"),
        ('printf "%s %s\\n" "$OA_KEEP" "$PWD"', 0, f"{u} /workspace/d-{u}\n"),
        (f"echo AFTER2-{u} >&2; exit 6", 6, f"AFTER2-{u}\n"),
        (f"echo AFTER3-{u}", 0, f"AFTER3-{u}\n"),
    ]
    for command, code, output in later:
        result = t.bash(command, s, timeout_s=10)
        problems += expect(t, result, exit_code=code, output=output, within=PROMPT_S)
    check_all(problems)
