"""Issue 7, process lifetime and walks that cannot be raced (docs/runner-trust.md §4, §5): nothing a call starts
outlives it, deleting a session ends its background processes, a fork bomb costs one call, a pathological glob
costs one call, and a symlink swapped under grep_search / glob_search never shows what lies outside /workspace.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from trust_support import (
    CALL_TIMEOUT_S,
    GRACE_S,
    PROMPT_S,
    Tenant,
    TrustServer,
    check_all,
    expect,
    snippet,
    tenants,
    trust,
    uniq,
    wait_until,
    without_kill_note,
)

__all__ = ["tenants", "trust"]  # fixtures, imported for pytest

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

# --- load --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def load(trust: TrustServer) -> Iterator[None]:
    """Another tenant keeps its CPU busy (two background busy loops) while the lifetime tests run."""
    t = trust.tenant("load")
    s = t.session()
    for _ in range(2):
        t.background("exec -a oa-load-busy python3 -c 'while True: pass'", s)
    wait_until(lambda: len((t.python(snippet(SCAN, mark="oa-load-busy"), s).report() or {}).get("left") or []) == 2,
               30, "the load tenant's two busy loops")
    yield
    t.drop_sandbox()


# --- leftover processes ----------------------------------------------------------------------------------

# The pid hopper: argv [python3, -c, HOPPER, mark, pause]. Every generation writes /tmp/<mark>.hb (a heartbeat that
# shows it alive even when no listing of /proc catches its pid), waits `pause`, forks the next generation and, after
# another `pause` (so two overlap), exits. With pause 0 it forks flat out.
HOPPER = """import os, sys, time
hb, pause, n = "/tmp/" + sys.argv[1] + ".hb", float(sys.argv[2]), 0
while True:
    n += 1
    with open(hb, "w") as f:
        f.write(str(n))
    time.sleep(pause)
    if os.fork():
        time.sleep(pause)
        os._exit(0)
"""
# The uid sniper: argv [python3, -c, SNIPER, mark, signal, starter pid (0: do not wait)]. As soon as the process of
# the call that started it has exited (a zombie or gone), kill(-1, signal) flat out — every process of its uid but
# itself — so it races whatever cleans up after that call; writes a heartbeat file now and then.
SNIPER = """import os, sys, time
hb, sig, starter, n = "/tmp/" + sys.argv[1] + ".hb", int(sys.argv[2]), int(sys.argv[3]), 0
with open(hb, "w") as f:
    f.write("waiting")
def exited():
    if not starter:
        return True
    try:
        with open(f"/proc/{starter}/stat", "rb") as f:
            st = f.read()
    except OSError:
        return True
    return st[st.rfind(b")") + 2:st.rfind(b")") + 3] in (b"Z", b"X")
while not exited():
    time.sleep(0.0005)
while True:
    n += 1
    try:
        os.kill(-1, sig)
    except OSError:
        pass
    if n % 200 == 0:
        with open(hb, "w") as f:
            f.write(str(n))
        time.sleep(0.0005)
"""

# bash: each trick leaves a process whose argv holds $M (built at run time, so the command text itself never holds
# it), then waits until that process is visible, so the call ends with the leftover alive.
BASH_TRICKS = {
    "background_amp": '(exec -a "$M" sleep 1000) &',
    "nohup": 'nohup bash -c \'exec -a "$0" sleep 1000\' "$M" >/dev/null 2>&1 &',
    "setsid": 'setsid bash -c \'exec -a "$0" sleep 1000\' "$M" >/dev/null 2>&1 &',
    "setsid_fork": 'setsid -f bash -c \'exec -a "$0" sleep 1000\' "$M" >/dev/null 2>&1',
    "double_fork": '( ( exec -a "$M" sleep 1000 >/dev/null 2>&1 & ) & )',
    "env_i": 'setsid -f env -i bash -c \'exec -a "$0" sleep 1000\' "$M" >/dev/null 2>&1',
    "disown": 'bash -c \'exec -a "$0" sleep 1000\' "$M" >/dev/null 2>&1 & disown -a',
    "ignores_signals": ('setsid -f bash -c \'trap "" TERM HUP INT QUIT USR1 USR2 PIPE; exec -a "$0" sleep 1000\' '
                        '"$M" >/dev/null 2>&1'),
    "stopped": ('setsid -f bash -c \'exec -a "$0" python3 -c "import os, signal, time; '
                'os.kill(os.getpid(), signal.SIGSTOP); time.sleep(1000)"\' "$M" >/dev/null 2>&1'),
    # A process that keeps moving to a new pid.
    "pid_hopper": 'setsid -f python3 -c "$HOP" "$M" 0.02 >/dev/null 2>&1',
    # Re-exec with the environment of a live process of this session (its background process), read from /proc.
    # The read itself is refused since each call's processes have a Landlock domain of their own (runner-trust.md
    # §3); the trick then leaves a process with an empty environment, which must die all the same.
    "borrowed_env": ('for p in $(ls /proc | grep -E "^[0-9]+$"); do '
                     'if tr "\\0" " " 2>/dev/null </proc/$p/cmdline | grep -q -- "^$BGM "; then src=$p; fi; done; '
                     'mapfile -d "" E 2>/dev/null </proc/$src/environ; '
                     'setsid -f env -i "${E[@]}" bash -c \'exec -a "$0" sleep 1000\' "$M" >/dev/null 2>&1'),
}
# A leftover that runs Python code counts as started once its code wrote its heartbeat ($HB set), any other once
# a process with $M in its argv exists.
BASH_WAIT = ('seen() { if [ -n "$HB" ]; then [ -e "/tmp/$M.hb" ]; else pgrep -f -- "$M" >/dev/null; fi; }; '
             'for _ in $(seq 1000); do seen && break; sleep 0.01; done; seen && echo STARTED || echo NOT-STARTED')

# python: the same, as a `python` call; M is built from CFG.
PY_TRICKS = {
    "daemonise": r"""
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.execv("/bin/sleep", [M, "1000"])
os.waitpid(pid, 0)
""",
    "popen_new_session": r"""
import subprocess
subprocess.Popen([M, "1000"], executable="/bin/sleep", start_new_session=True, stdin=subprocess.DEVNULL,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
""",
    "pid_hopper": r"""
import subprocess
subprocess.Popen([sys.executable, "-c", CFG["hopper"], M, "0.02"], start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
""",
    "pid_hopper_tight": r"""
import subprocess
subprocess.Popen([sys.executable, "-c", CFG["hopper"], M, "0"], start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
""",
    # A leftover that keeps sending SIGSTOP / SIGKILL to every process of its own uid (kill(-1)): whatever the
    # runner starts under the session's uid to clean up (or the session's next shell) is hit as soon as it exists.
    "uid_sniper_stop": r"""
import subprocess
subprocess.Popen([sys.executable, "-c", CFG["sniper"], M, "19", str(os.getpid())], start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
""",
    # SIGTERM from the start (the call's own process ignores it): any new process of the uid dies at once unless it
    # blocks or ignores SIGTERM — the clean-up's own helper included.
    "uid_sniper_term": r"""
import signal, subprocess
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c", CFG["sniper"], M, "15", "0"], start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
""",
    "uid_sniper_kill": r"""
import subprocess
subprocess.Popen([sys.executable, "-c", CFG["sniper"], M, "9", str(os.getpid())], start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
""",
    "borrowed_env": r"""
src = [p for p in pids() if (argv(p) or [""])[0] == CFG["bgm"]][0]
try:
    with open(f"/proc/{src}/environ", "rb") as f:
        env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
except PermissionError:  # another call's process: out of reach (runner-trust.md §3); try with nothing
    env = {}
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.execve("/bin/sleep", [M, "1000"], env)
os.waitpid(pid, 0)
""",
}
PY_WAIT = r"""
def seen():
    return os.path.exists(f"/tmp/{M}.hb") if CFG["hb"] else marked(M)
deadline = time.monotonic() + 10
while not seen() and time.monotonic() < deadline:
    time.sleep(0.01)
print("STARTED" if seen() else "NOT-STARTED")
"""
# Processes whose argv holds the mark, sampled for 0.3 s (so a pid hopper is seen even when one listing of /proc
# misses it), whether the mark's heartbeat file moved meanwhile, and the session's background process.
SCAN = r"""
hb = f"/tmp/{CFG['mark']}.hb"
def beat():
    try:
        with open(hb) as f:
            return f.read()
    except OSError:
        return None
before, seen = beat(), {}
deadline = time.monotonic() + 0.3
while True:
    for row in marked(CFG["mark"]):
        seen[row[0]] = row
    if time.monotonic() > deadline:
        break
    time.sleep(0.01)
after = beat()
emit({"left": list(seen.values()), "heartbeat": before is not None and after != before,
      "bg": marked(CFG["bgm"]) if CFG.get("bgm") else None})
"""

TRICKS = [("bash", name) for name in BASH_TRICKS] + [("python", name) for name in PY_TRICKS]
REPEATS = 3


def _beats(trick: str) -> bool:
    """Whether the trick's leftover runs Python code that writes a heartbeat file (the hopper, the snipers)."""
    return "hopper" in trick or "sniper" in trick


def _start(t: Tenant, s: str, tool: str, trick: str, mark: str, bgm: str | None) -> Any:
    head, tail = mark[:8], mark[8:]  # the mark never appears whole in the call's own text
    if tool == "bash":
        hop = HOPPER.replace("'", "'\\''")
        hb = "1" if _beats(trick) else ""
        command = (f"M=\"{head}\"\"{tail}\"; BGM=\"{bgm or ''}\"; HB={hb}; HOP='{hop}'\n{BASH_TRICKS[trick]}\n"
                   f"{BASH_WAIT}")
        return t.bash(command, s)
    code = snippet(f"M = CFG['head'] + CFG['tail']\n{PY_TRICKS[trick]}\n{PY_WAIT}", head=head, tail=tail, bgm=bgm,
                   hopper=HOPPER, sniper=SNIPER, hb=_beats(trick))
    return t.python(code, s)


def _applies(trick: str, background: bool) -> bool:
    """Borrowing needs a live process of the session to copy the environment from; a sniper would hit the
    session's own background process before any clean-up could run, so each is tried where it means something."""
    if trick == "borrowed_env":
        return background
    return not (trick.startswith("uid_sniper") and background)


CASES = [
    pytest.param(tool, trick, background, id=f"{tool}-{trick}-{'with-background' if background else 'alone'}")
    for tool, trick in TRICKS
    for background in (False, True)
    if _applies(trick, background)
]


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("load")
@pytest.mark.parametrize(("tool", "trick", "background"), CASES)
def test_nothing_a_call_starts_outlives_it(tenants: Any, tool: str, trick: str, background: bool) -> None:
    """A `bash` or `python` call leaves a process behind by `&`, nohup, setsid, a double fork, `env -i`,
    disown, ignored signals, a stopped process, a pid-hopping fork loop, a daemon, or a borrowed environment,
    and waits until that process runs. The session's very next call finds no such process in /proc — also
    when the session has a live background process (which must survive) — three times over, while another
    tenant keeps the CPU busy."""
    t: Tenant = tenants(f"left-{tool}-{trick}".replace("_", "-"))
    u = uniq()
    s = t.session()
    problems: list[str] = []
    bgm = None
    if background:
        bgm = f"oa-bg-{u}"
        bid = t.background(f'exec -a "{bgm[:6]}""{bgm[6:]}" sleep 1000', s)
        wait_until(lambda: (t.python(snippet(SCAN, mark=bgm), s).report() or {}).get("left"), 30,
                   "the session's background process")
    for i in range(REPEATS):
        mark = f"oa-left-{u}-{i}"
        started = _start(t, s, tool, trick, mark, bgm)
        problems += expect(t, started, exit_code=0, output="STARTED\n")
        scan = t.python(snippet(SCAN, mark=mark, bgm=bgm), s)
        problems += expect(t, scan, exit_code=0)
        report = scan.report() or {}
        if report.get("left") or report.get("heartbeat"):
            problems.append(f"round {i}: left behind after the call answered: {report.get('left')} "
                            f"(heartbeat moving: {report.get('heartbeat')})")
        if background and not report.get("bg"):
            problems.append(f"round {i}: the session's own background process was killed")
        problems += expect(t, t.bash(f"echo round-{i}", s, timeout_s=10), exit_code=0, output=f"round-{i}\n",
                           within=PROMPT_S)
        if problems:
            break
    if background:
        problems += expect(t, t.call("kill_process", {"id": bid}, s), exit_code=0)
    check_all(problems)


@pytest.mark.timeout(180)
def test_a_call_that_leaves_nothing_reports_no_killed_processes(tenants: Any) -> None:
    """The runner's note on leftovers it killed is an audited claim about the command: a `python` or `bash`
    call that starts nothing besides itself — with or without a session, first or later in the session —
    answers exactly its output, with no "[killed N process(es) ...]" note."""
    t: Tenant = tenants("nonote")
    s = t.session()
    problems: list[str] = []
    for i in range(3):
        for tool, session in (("python", None), ("python", s), ("bash", None), ("bash", s)):
            text = f"clean-{tool}-{'session' if session else 'oneshot'}-{i}"
            command = {"code": f"print({text!r})"} if tool == "python" else {"command": f"echo {text}"}
            result = t.call(tool, command, session)
            problems += expect(t, result, exit_code=0, output=f"{text}\n", kill_note=False)
    check_all(problems)


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("load")
def test_deleting_a_session_ends_its_background_processes(tenants: Any) -> None:
    """A session's `run_in_background` process (and a setsid'd child it started) are gone shortly after
    `DELETE /sessions/{id}`; a process of another session of the tenant lives on."""
    t: Tenant = tenants("delete")
    u = uniq()
    doomed, keeper = t.session(), t.session()
    m1, m2, keep = f"oa-del1-{u}", f"oa-del2-{u}", f"oa-keep-{u}"
    t.background(f'setsid -f bash -c \'exec -a "$0" sleep 1000\' "{m2[:6]}""{m2[6:]}"; '
                 f'exec -a "{m1[:6]}""{m1[6:]}" sleep 1000', doomed)
    keeper_id = t.background(f'exec -a "{keep[:6]}""{keep[6:]}" sleep 1000', keeper)
    probe = t.session()

    def alive(mark: str) -> list[Any]:
        return list((t.python(snippet(SCAN, mark=mark), probe).report() or {}).get("left") or [])

    wait_until(lambda: alive(m1) and alive(m2) and alive(keep), 30, "the background processes to start")
    assert t.delete_session(doomed) == 204
    problems: list[str] = []
    try:
        wait_until(lambda: not alive(m1) and not alive(m2), 15, "the deleted session's processes to end")
    except AssertionError as exc:
        problems.append(f"{exc}: still {alive(m1) + alive(m2)}")
    if not alive(keep):
        problems.append("another session's background process was killed too")
    problems += expect(t, t.call("kill_process", {"id": keeper_id}, keeper), exit_code=0)
    check_all(problems)


# --- fork bomb -----------------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
@pytest.mark.parametrize("attempt", range(3))
def test_fork_bomb_as_a_new_tenants_first_call(tenants: Any, attempt: int) -> None:
    """The first call of a brand-new tenant is `:(){ :|:& };:` with a 5 s timeout: its answer names
    `limit: "pids"` (API and audit) within the timeout, and the very next call works at once (no retry)."""
    t: Tenant = tenants(f"bomb{attempt}")
    u = uniq()
    bomb = t.bash(":(){ :|:& };:", timeout_s=5)
    problems: list[str] = []
    if bomb.limit != "pids":
        problems.append(f"the bomb's answer names limit {bomb.limit!r}, not 'pids': {bomb.brief()}")
    try:
        record = t.finished(bomb.call_id, "bash")
    except AssertionError as exc:
        problems.append(str(exc))
    else:
        if record.get("limit") != "pids":
            problems.append(f"audit limit {record.get('limit')!r}, not 'pids'")
    if bomb.elapsed > 5 + GRACE_S + 5:
        problems.append(f"the bomb's call took {bomb.elapsed:.1f} s")
    after = t.bash(f"echo alive-{u}; ps -e --no-headers | wc -l")
    problems += expect(t, after, exit_code=0, within=PROMPT_S)
    lines = without_kill_note(after.output).splitlines()
    if not lines or lines[0] != f"alive-{u}" or len(lines) < 2 or not lines[1].strip().isdigit():
        problems.append(f"the next call's output: {after.output[:500]!r}")
    elif int(lines[1]) > 20:
        problems.append(f"{lines[1]} processes still in the container after the bomb")
    s = t.session()
    problems += expect(t, t.bash(f"echo session-{u}", s), exit_code=0, output=f"session-{u}\n", within=PROMPT_S)
    check_all(problems)


# --- pathological glob ---------------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_pathological_glob_finishes_and_the_runner_keeps_answering(tenants: Any) -> None:
    """`*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b` against 20 files whose names are 200 a's finishes (no match) within
    the call's time, and the next calls answer promptly; grep_search with the same glob as its filter too."""
    t: Tenant = tenants("glob")
    u = uniq()
    made = t.bash(f'mkdir -p patho-{u} && for i in $(seq 10 29); do : > "patho-{u}/$(printf "a%.0s" $(seq 198))$i"; '
                  f"done; ls patho-{u} | wc -l")
    assert without_kill_note(made.output).strip() == "20", made.brief()
    pattern = "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b"
    problems: list[str] = []
    glob = t.call("glob_search", {"pattern": pattern, "path": f"patho-{u}"})
    problems += expect(t, glob, exit_code=0, within=CALL_TIMEOUT_S)
    if "aaaa" in glob.output:
        problems.append(f"glob matched names without a 'b': {glob.output[:300]!r}")
    problems += expect(t, t.bash(f"echo next-{u}"), exit_code=0, output=f"next-{u}\n", within=PROMPT_S)
    grep = t.call("grep_search", {"pattern": "x", "glob": pattern, "path": f"patho-{u}"})
    problems += expect(t, grep, exit_code=0, within=CALL_TIMEOUT_S)
    deep = t.call("glob_search", {"pattern": "**/" + pattern})
    problems += expect(t, deep, exit_code=0, within=CALL_TIMEOUT_S)
    problems += expect(t, t.bash(f"echo after-{u}"), exit_code=0, output=f"after-{u}\n", within=PROMPT_S)
    check_all(problems)


# --- memory pressure ------------------------------------------------------------------------------------------

# Fill the container's memory with many processes, each smaller than the runner (its VmRSS read from /proc), so
# that the kernel's OOM killer, which takes the largest process of the cgroup, finds the runner first.
OOM_SPRAY = r'''
import subprocess

def anon_kb(pid):
    # Under memory pressure file pages are reclaimed first: what the OOM killer compares is mostly anonymous memory.
    s = status(pid)
    return int(s["RssAnon"].split()[0]) if s and "RssAnon" in s else 0

runner = runner_pid()
target_kb = anon_kb(runner) if runner else 9000
hold = "import sys, time\nb = b'x' * int(sys.argv[1])\nprint('ok', flush=True)\ntime.sleep(120)\n"
probe = subprocess.Popen([sys.executable, "-c", hold, "0"], stdout=subprocess.PIPE)
probe.stdout.readline()
base_kb = anon_kb(probe.pid) or 3000
probe.kill()
payload_kb = max(256, target_kb - base_kb - 1024)
limit_kb = 512 * 1024
for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
    try:
        with open(path) as f:
            text = f.read().strip()
        if text.isdigit():
            limit_kb = int(text) // 1024
            break
    except OSError:
        pass
count = min(200, int(limit_kb / (base_kb + payload_kb) * 1.3) + 5)
children = []
for _ in range(count):
    try:
        children.append(subprocess.Popen([sys.executable, "-c", hold, str(payload_kb * 1024)],
                                         stdout=subprocess.DEVNULL))
    except OSError:
        break
deadline = time.monotonic() + 20
while time.monotonic() < deadline and any(c.poll() is None and anon_kb(c.pid) < payload_kb for c in children):
    time.sleep(0.1)
emit({"runner_anon_kb": target_kb, "child_anon_kb": base_kb + payload_kb, "started": len(children),
      "alive": sum(c.poll() is None for c in children), "runner_after": runner_pid()})
'''


@pytest.mark.timeout(240)
def test_memory_pressure_from_many_small_processes_spares_the_runner(tenants: Any) -> None:
    """Session A fills the memory limit with many processes, each smaller than the runner. The OOM killer must
    not pick the runner (or another session's processes): session B's next call still has its cwd and exported
    variable — the container was not restarted — and answers promptly."""
    t: Tenant = tenants("oom")
    u = uniq()
    a, b = t.session(), t.session()
    problems: list[str] = []
    problems += expect(t, t.bash(f"mkdir -p b-{u} && cd b-{u} && export OA_B={u}", b), exit_code=0)
    spray = t.python(snippet(OOM_SPRAY), a, timeout_s=60)
    if spray.status != 200:
        problems.append(f"the attacker's call got no answer: {spray.brief()}")
    problems += expect(t, t.bash('printf "%s %s\\n" "$PWD" "$OA_B"', b, timeout_s=10), exit_code=0,
                       output=f"/workspace/b-{u} {u}\n", within=PROMPT_S)
    problems += expect(t, t.bash(f"echo fresh-{u}", t.session(), timeout_s=10), exit_code=0,
                       output=f"fresh-{u}\n", within=PROMPT_S)
    check_all(problems, f"(attacker's answer: {spray.brief()})")


# --- symlink swap race ---------------------------------------------------------------------------------------

# Swaps race/dir and race/tree/sub between a real directory and a symlink out of /workspace (alternately /etc and
# a /tmp directory holding files with a unique name and content), with renameat2(RENAME_EXCHANGE) so the name
# always exists, as fast as it can; prints a count now and then.
SWAPPER = r'''
import ctypes, os, sys, time
u = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
out = f"/tmp/oa-outside-{u}"
os.makedirs(out, exist_ok=True)
for i in range(5):
    with open(f"{out}/outside-{u}-{i}.txt", "w") as f:
        f.write(f"OUTSIDE-{u}\n")
base = f"/workspace/race-{u}"
for d in ("dir", "tree/sub"):
    os.makedirs(f"{base}/{d}", exist_ok=True)
    with open(f"{base}/{d}/inside-{u}.txt", "w") as f:
        f.write(f"INSIDE-{u}\n")
for name, target in (("to-etc", "/etc"), ("to-tmp", out), ("tree/to-etc", "/etc"), ("tree/to-tmp", out)):
    os.symlink(target, f"{base}/{name}")
fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
PAIRS = ((b"dir", b"to-etc"), (b"dir", b"to-tmp"), (b"tree/sub", b"tree/to-etc"), (b"tree/sub", b"tree/to-tmp"))
n = 0
print("swapping", flush=True)
while True:
    for a, b in PAIRS:
        if libc.renameat2(fd, a, fd, b, 2) != 0:
            print("renameat2 failed", ctypes.get_errno(), flush=True)
            sys.exit(1)
        libc.renameat2(fd, a, fd, b, 2)
    n += 1
    if n % 20000 == 0:
        print("swaps", n, flush=True)
'''
RACE_CALLS = 1200
OUTSIDE_NAMES = ("passwd", "shadow", "hostname", "os-release", "root:x:0:0")


@pytest.mark.timeout(600)  # the swapper floods the change watch: each call's window reads a full inotify queue
def test_symlink_swap_race_never_leaks_outside_the_workspace(tenants: Any) -> None:
    """A background process swaps a directory (and a nested one) with symlinks to /etc and to a /tmp directory
    of uniquely named files, while 1200 grep_search / glob_search calls run in parallel over it: no answer
    ever holds a name or content from outside /workspace, and the runner never fails a call (INTERNAL)."""
    t: Tenant = tenants("race")
    u = uniq()
    s = t.session()
    bid = t.background(f"python3 -c '{SWAPPER}' {u}", s)
    wait_until(lambda: "swapping" in t.call("bash_output", {"id": bid}, s).output, 30, "the swapper to start")
    searches = [
        ("grep_search", {"pattern": f"OUTSIDE-{u}|INSIDE-{u}|root:x:0:0", "path": f"race-{u}/dir",
                         "output_mode": "content"}),
        ("grep_search", {"pattern": f"OUTSIDE-{u}|INSIDE-{u}|root:x:0:0", "path": f"race-{u}/tree",
                         "output_mode": "content"}),
        ("grep_search", {"pattern": f"OUTSIDE-{u}|INSIDE-{u}|root:x:0:0", "output_mode": "files_with_matches"}),
        ("glob_search", {"pattern": "**", "path": f"race-{u}/dir"}),
        ("glob_search", {"pattern": "**/*", "path": f"race-{u}/tree"}),
        ("glob_search", {"pattern": f"race-{u}/**"}),
    ]
    forbidden = (f"OUTSIDE-{u}", f"outside-{u}", *OUTSIDE_NAMES)
    leaks: list[str] = []
    errors: dict[str, int] = {}
    inside = 0
    lock = threading.Lock()

    def one(i: int) -> None:
        nonlocal inside
        tool, args = searches[i % len(searches)]
        result = t.call(tool, args)
        with lock:
            code = result.error_code or "ok"
            errors[code] = errors.get(code, 0) + 1
            if code in ("INTERNAL",) or result.status != 200:
                leaks.append(f"call {i} {tool} {args}: {result.brief()[:400]}")
            for text in forbidden:
                if text in result.output:
                    leaks.append(f"call {i} {tool} {args}: shows {text!r}: {result.output[:300]!r}")
                    break
            if f"inside-{u}" in result.output or f"INSIDE-{u}" in result.output:
                inside += 1

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(RACE_CALLS)))
    still = t.call("bash_output", {"id": bid}, s)
    problems = list(dict.fromkeys(leaks))[:20]
    if len(leaks) > 20:
        problems.append(f"... {len(leaks)} answers in all")
    if "still running" not in still.output:
        problems.append(f"the swapper did not run throughout: {still.brief()}")
    if inside < RACE_CALLS // 20:
        problems.append(f"only {inside} of {RACE_CALLS} answers showed the workspace's own files")
    t.call("kill_process", {"id": bid}, s)
    check_all(problems, f"(answers by error code: {errors})")
