"""The session's persistent shell: framing, restarts with the saved state, ordering of calls."""

from __future__ import annotations

import asyncio
import os
import select
import subprocess

import pytest
from runner_support import Runner, pid_alive, wait_until

from toolrunner.runner import bashshell

pytestmark = pytest.mark.anyio


async def test_each_call_is_a_fresh_shell_that_keeps_cwd_exports_and_functions(runner: Runner) -> None:
    """Every call is its own process, a subshell of the session's shell, whose exit status is the result; what
    a session keeps is its working directory, exported variables and shell functions, not plain variables."""
    first = await runner.call("bash", command="echo $BASHPID; f() { echo in-f; }; plain=1; export kept=2; cd /tmp")
    second = await runner.call("bash", command='echo $BASHPID; f; echo "[$plain][$kept]"; pwd')
    assert second.exit_code == 0, second
    lines = second.output.splitlines()
    assert lines[0] != first.output.splitlines()[0]
    assert lines[1:] == ["in-f", "[][2]", "/tmp"]


@pytest.mark.parametrize("command", ["exit 3", "exec true", "kill $BASHPID", "kill $$; kill -HUP $$"])
async def test_a_command_that_ends_the_shell_reports_and_the_next_call_gets_a_fresh_one(
    runner: Runner, command: str
) -> None:
    """exit/exec/kill end the call's own process with their status; signals to the session's shell ($$)
    are ignored by it; the next call is a new process with the saved state."""
    (runner.ws / "sub").mkdir()
    first = await runner.call("bash", command="cd sub; export KEEP=yes; echo $BASHPID")
    r = await runner.call("bash", command=f"echo before; {command}")
    assert r.error is None and r.output == "before\n"
    assert r.exit_code == {"exit 3": 3, "exec true": 0, "kill $BASHPID": 143, "kill $$; kill -HUP $$": 0}[command]
    r = await runner.call("bash", command='echo $BASHPID; pwd; echo "$KEEP"')
    pid, cwd, keep = r.output.splitlines()
    assert pid != first.output.strip() and cwd == str(runner.ws / "sub") and keep == "yes"


async def test_exit_keeps_the_state_of_its_own_call(runner: Runner) -> None:
    """A shell ended by `exit` saves its state on the way out, so a cd just before it sticks."""
    (runner.ws / "sub").mkdir()
    r = await runner.call("bash", command="cd sub; export AT_EXIT=1; exit 0")
    assert r.exit_code == 0
    r = await runner.call("bash", command='pwd; echo "$AT_EXIT"')
    assert r.output.splitlines() == [str(runner.ws / "sub"), "1"]


async def test_output_cannot_fake_the_end_of_a_call(runner: Runner) -> None:
    """Output that looks like an end marker, NULs, a missing final newline and a syntax error pass through."""
    r = await runner.call("bash", command="printf '\\0abc 0 0\\n'; printf 'x\\0'; sleep 0.1; printf tail")
    assert r.output == "\0abc 0 0\nx\0tail" and r.exit_code == 0
    r = await runner.call("bash", command="if then")
    assert r.exit_code == 2 and "syntax error" in r.output and r.error is None
    r = await runner.call("bash", command="echo fine")
    assert r.output == "fine\n"


async def test_redirecting_the_shell_does_not_hide_later_calls(runner: Runner) -> None:
    """`exec >/dev/null 2>&1` silences only its own call; the next call's output arrives as usual."""
    r = await runner.call("bash", command="exec >/dev/null 2>&1; echo hidden")
    assert r.output == "" and r.exit_code == 0
    r = await runner.call("bash", command="echo out; echo err >&2; set -x")
    assert r.output == "out\nerr\n"
    r = await runner.call("bash", command="echo after")
    assert r.output == "after\n"


async def test_commands_read_dev_null_and_long_multibyte_commands_arrive_intact(runner: Runner) -> None:
    """stdin of a command is /dev/null (it cannot eat the framing); a 300 KB UTF-8 command runs byte-exact."""
    r = await runner.call("bash", command="cat; read x; echo rc=$?")
    assert r.output == "rc=1\n"
    body = "é✓" * 60_000
    r = await runner.call("bash", command=f"s='{body}'; printf %s \"$s\" | wc -c")
    assert r.output.strip() == str(len(body.encode()))


async def test_timeout_restores_the_state_before_the_timed_out_call(runner: Runner) -> None:
    """After a timeout the new shell has the cwd and exports of the last completed call, not the killed one."""
    (runner.ws / "a").mkdir()
    (runner.ws / "b").mkdir()
    await runner.call("bash", command="cd a; export V=old")
    r = await runner.call("bash", command="cd ../b; export V=new; sleep 30", timeout_s=0.5)
    assert r.timed_out and r.exit_code == 137
    r = await runner.call("bash", command='pwd; echo "$V"')
    assert r.output.splitlines() == [str(runner.ws / "a"), "old"]


async def test_cancel_kills_the_command_and_the_shell_comes_back(runner: Runner) -> None:
    """A cancelled call's processes die and the session's next call runs with the saved state."""
    await runner.call("bash", command="export BACK=1")
    begun = asyncio.Event()

    async def on_chunk(stream: str, data: str) -> None:
        begun.set()

    task = asyncio.create_task(
        runner.channel.call(
            "s",
            "bash",
            {"command": "sleep 300 & echo $! > pid; echo begun; wait"},
            timeout_s=30,
            output_cap=1000,
            on_chunk=on_chunk,
        )
    )
    async with asyncio.timeout(10):
        await begun.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pid = int((runner.ws / "pid").read_text())
    assert await wait_until(lambda: not pid_alive(pid))
    r = await runner.call("bash", command='echo "$BACK"')
    assert r.output == "1\n"


async def test_calls_of_one_session_take_turns_and_sessions_run_in_parallel(runner: Runner) -> None:
    """A session's calls never overlap on its shell; another session runs while the first one waits."""
    waiter = asyncio.create_task(
        runner.call("bash", session="a", command="touch busy; until [ -e go ]; do sleep 0.01; done; rm busy")
    )
    second = asyncio.create_task(runner.call("bash", session="a", command="[ -e busy ] && echo overlap || echo alone"))
    assert await wait_until(lambda: (runner.ws / "busy").exists())
    await runner.call("bash", session="b", command="touch go")  # would deadlock if sessions were serialised
    r1, r2 = await asyncio.gather(waiter, second)
    assert r1.exit_code == 0 and r2.output == "alone\n"


async def test_background_process_starts_from_the_shell_state(runner: Runner) -> None:
    """run_in_background sees the session's cwd and exports as the shell last saved them."""
    (runner.ws / "sub").mkdir()
    await runner.call("bash", command="cd sub; export BGV=seen")
    r = await runner.call("bash", command='pwd > where; echo "$BGV" >> where', run_in_background=True)
    assert r.error is None
    path = runner.ws / "sub" / "where"
    assert await wait_until(lambda: path.exists() and path.read_text().count("\n") == 2)
    assert path.read_text() == f"{runner.ws / 'sub'}\nseen\n"


async def test_close_session_ends_the_shell(runner: Runner) -> None:
    """close_session kills the session's shell; the session's next call starts a new, clean one."""
    r = await runner.call("bash", command="export GONE=1; echo $$")
    pid = int(r.output)
    assert (await runner.channel.close_session("s")).error is None
    assert await wait_until(lambda: not pid_alive(pid))
    r = await runner.call("bash", command='echo "[${GONE-}]"')
    assert r.output == "[]\n"


def test_marker_split_across_reads_is_cut_and_lookalikes_pass() -> None:
    """Fed one byte at a time, output before the marker passes unchanged (NULs included), nothing after."""
    from toolrunner.runner.markers import Cut

    cut = Cut(b"\0abcd\n")
    data = b"x\0ab\0abc y\0abcd\ntrailing"
    out = b"".join(cut.feed(data[i : i + 1]) for i in range(len(data)))
    assert out == b"x\0ab\0abc y" and cut.done


async def test_a_file_size_limit_does_not_stick_to_the_session(runner: Runner) -> None:
    """After a call killed by its own `ulimit -f`, the next call can write big files again, state intact."""
    await runner.call("bash", command="export STAYS=1")
    r = await runner.call("bash", command="ulimit -f 1; head -c 100000 /dev/zero > big")
    assert r.limit == "disk"
    r = await runner.call("bash", command='head -c 100000 /dev/zero > big && wc -c < big; echo "$STAYS"')
    assert r.output.split() == ["100000", "1"] and r.exit_code == 0


@pytest.mark.parametrize("status_fd, state_fd", [(58, 62), (62, 58), (59, 61), (10, 11)])
def test_the_session_shell_keeps_its_pipes_whatever_their_numbers(status_fd: int, state_fd: int) -> None:
    """The status and state pipes reach the session shell under the runner's own fd numbers, which grow with
    its sessions (58 and 62 by the tenth in a container). The shell's copies of its request pipe and stderr
    take numbers bash chooses, so none replaces them: a fixed `exec 58<&0` once did, and that call waited for
    a status that was never written."""
    status_r, status_w = os.pipe()
    state_r, state_w = os.pipe()
    # Through fds 200 and 201, so that a target number never meets the pipes' own numbers in this process.
    mover = (f"exec 200>&{status_w} 201>&{state_w}; exec {status_w}>&- {state_w}>&-; "
             f'exec {status_fd}>&200 {state_fd}>&201 200>&- 201>&-; exec bash --noprofile --norc -c "$0"')
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C",
           "__OA_SFD": str(state_fd), "__OA_XFD": str(status_fd)}
    proc = subprocess.Popen(["bash", "-c", mover, bashshell._SESSION_SHELL], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            pass_fds=(status_w, state_w))
    os.close(status_w)
    os.close(state_w)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        state, command = b"", b"echo hello"
        proc.stdin.write(f"{len(state):010d} {len(command):010d}\n".encode() + state + command)
        proc.stdin.flush()
        assert _read_line(status_r) == b"0\n"
        nonce = "ab" * 16
        proc.stdin.write(f"{nonce} -\n".encode())
        proc.stdin.flush()
        out = b""
        while not out.endswith(b"\0" + nonce.encode() + b"\n"):
            out += _read_some(proc.stdout.fileno())
        assert out == b"hello\n\0" + nonce.encode() + b"\n"
        saved = b""
        while not saved.endswith(bashshell.STATE_END):
            saved += _read_some(state_r)
    finally:
        proc.kill()
        proc.wait(timeout=5)
        for fd in (status_r, state_r):
            os.close(fd)


def _read_some(fd: int) -> bytes:
    ready, _, _ = select.select([fd], [], [], 5)
    assert ready, "the session shell wrote nothing within 5 s"
    data = os.read(fd, 65536)
    assert data, "the pipe was closed"
    return data


def _read_line(fd: int) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        data += _read_some(fd)
    return data
