"""The bash tool and its background processes, against the real runner subprocess."""

from __future__ import annotations

import asyncio
import os
import re

import pytest
from runner_support import Runner, pid_alive, wait_until

pytestmark = pytest.mark.anyio


async def test_cwd_and_exports_persist_within_a_session(runner: Runner) -> None:
    """cd, exported variables and unset survive between calls of one session."""
    (runner.ws / "sub").mkdir()
    r = await runner.call("bash", command="cd sub && export FOO='a b' && export GONE=1 && unset HOME")
    assert r.exit_code == 0 and r.error is None
    await runner.call("bash", command="unset GONE")
    r = await runner.call("bash", command='pwd; echo "$FOO"; echo "[${GONE-unset}]"; echo "[${HOME-unset}]"')
    assert r.output.splitlines() == [str(runner.ws / "sub"), "a b", "[unset]", "[unset]"]


async def test_sessions_do_not_share_state(runner: Runner) -> None:
    """Another session starts from the workspace root with none of the first session's exports."""
    (runner.ws / "sub").mkdir()
    await runner.call("bash", session="a", command="cd sub; export ONLY_A=1")
    r = await runner.call("bash", session="b", command='pwd; echo "[${ONLY_A-}]"')
    assert r.output.splitlines() == [str(runner.ws), "[]"]


async def test_exit_code_and_stderr(runner: Runner) -> None:
    """The exit status is reported and stderr is part of the output."""
    r = await runner.call("bash", command="echo out; echo err >&2; exit 3")
    assert r.exit_code == 3 and "out" in r.output and "err" in r.output and r.error is None


async def test_timeout_kills_the_process_group_and_the_shell_survives(runner: Runner) -> None:
    """A command past its timeout is killed with its children; the session's next call works."""
    await runner.call("bash", command="export KEEP=yes")
    r = await runner.call("bash", command="sleep 30 & echo $! > pid; echo started; sleep 30", timeout_s=0.5)
    assert r.timed_out and r.limit == "timeout" and r.error is not None and r.error.code == "TIMEOUT"
    assert "started" in r.output
    pid = int((runner.ws / "pid").read_text())
    assert await wait_until(lambda: not pid_alive(pid))
    r = await runner.call("bash", command="echo $KEEP")
    assert r.output == "yes\n" and not r.timed_out


@pytest.mark.parametrize(
    "command",
    [
        "sleep 300 & echo $! > pid",
        "nohup sleep 300 >/dev/null 2>&1 & echo $! > pid",
        "setsid sleep 300 & echo $! > pid",
        "setsid bash -c 'sleep 300 & echo $! > pid' & wait",
        "(bash -c 'sleep 300 & echo $! > pid' &) ; sleep 0.1",
        "env -i /bin/sh -c 'sleep 300 & echo $! > pid'",
    ],
)
async def test_leftover_processes_are_killed_when_the_call_ends(runner: Runner, command: str) -> None:
    """Background, nohup, setsid, double-forked and unmarked leftovers die with the call that made them."""
    r = await runner.call("bash", command=command)
    assert r.error is None
    pid = int((runner.ws / "pid").read_text())
    assert await wait_until(lambda: not pid_alive(pid)), f"pid {pid} survived {command!r}"


async def test_background_process_output_and_kill(runner: Runner) -> None:
    """run_in_background answers at once; bash_output returns only new output; kill_process stops it."""
    r = await runner.call(
        "bash", command="for i in 1 2 3; do echo line$i; sleep 0.05; done; sleep 300", run_in_background=True
    )
    assert r.error is None
    bid = re.search(r"with id (\S+) ", r.output)
    assert bid is not None
    pid = int(re.search(r"pid (\d+)", r.output).group(1))  # type: ignore[union-attr]
    seen = ""

    async def poll() -> str:
        out = await runner.call("bash_output", id=bid.group(1))
        assert "still running" in out.output and out.exit_code is None
        return out.output.split("[process")[0]

    async with asyncio.timeout(5):
        while "line3" not in seen:
            seen += await poll()
    assert seen.count("line1") == 1 and seen.count("line3") == 1
    assert await poll() == ""
    killed = await runner.call("kill_process", id=bid.group(1))
    assert killed.error is None and "killed" in killed.output
    assert await wait_until(lambda: not pid_alive(pid))
    done = await runner.call("bash_output", id=bid.group(1))
    assert "exited with code" in done.output


async def test_background_process_finishes_with_exit_code(runner: Runner) -> None:
    """A background process that ends reports its exit code through bash_output."""
    r = await runner.call("bash", command="echo done; exit 4", run_in_background=True)
    bid = re.search(r"with id (\S+) ", r.output).group(1)  # type: ignore[union-attr]

    async def finished() -> bool:
        out = await runner.call("bash_output", id=bid)
        return out.exit_code == 4

    async with asyncio.timeout(5):
        while not await finished():
            await asyncio.sleep(0.02)


async def test_unknown_process_id(runner: Runner) -> None:
    """bash_output and kill_process on an unknown id (or another session's) say PROCESS_NOT_FOUND."""
    r = await runner.call("bash", session="a", command="sleep 300", run_in_background=True)
    bid = re.search(r"with id (\S+) ", r.output).group(1)  # type: ignore[union-attr]
    for tool, session, pid in (("bash_output", "a", "nope"), ("kill_process", "b", bid)):
        out = await runner.call(tool, session=session, id=pid)
        assert out.error is not None and out.error.code == "PROCESS_NOT_FOUND"


async def test_close_session_ends_background_processes(runner: Runner) -> None:
    """close_session kills the session's background processes and forgets its state."""
    r = await runner.call("bash", command="export X=1; sleep 300", run_in_background=True)
    pid = int(re.search(r"pid (\d+)", r.output).group(1))  # type: ignore[union-attr]
    await runner.call("bash", command="export Y=2")
    closed = await runner.channel.close_session("s")
    assert closed.error is None
    assert await wait_until(lambda: not pid_alive(pid))
    r = await runner.call("bash", command='echo "[${Y-}]"')
    assert r.output == "[]\n"


async def test_output_cap_truncates_and_says_so(runner: Runner) -> None:
    """Output beyond the cap is cut, keeping the head, and the result names the output limit."""
    r = await runner.call("bash", command="seq 1 100000", output_cap=1000)
    assert r.truncated and r.limit == "output" and r.error is None
    assert r.output.startswith("1\n2\n3\n") and "more bytes dropped" in r.output
    assert len(r.output) < 1200


async def test_streamed_chunks_are_bounded_by_the_cap(runner: Runner) -> None:
    """With on_chunk, output arrives as chunks, at most output_cap bytes in total."""
    chunks: list[tuple[str, str]] = []

    async def on_chunk(stream: str, data: str) -> None:
        chunks.append((stream, data))

    r = await runner.channel.call(
        "s",
        "bash",
        {"command": "echo a; echo b >&2; seq 1 50000"},
        timeout_s=10,
        output_cap=500,
        on_chunk=on_chunk,
    )
    assert r.truncated
    # stderr's "b" may lose the race to the cap: the two pipes are read as their bytes arrive, in no fixed order
    assert {s for s, _ in chunks} <= {"stdout", "stderr"}
    assert "".join(d for s, d in chunks if s == "stdout").startswith("a\n1\n2\n")
    assert sum(len(d.encode()) for _, d in chunks) <= 500


async def test_streamed_chunks_name_their_stream(runner: Runner) -> None:
    """With on_chunk and room for everything, each stream's bytes arrive as chunks named for it, whole."""
    chunks: list[tuple[str, str]] = []

    async def on_chunk(stream: str, data: str) -> None:
        chunks.append((stream, data))

    r = await runner.channel.call("s", "bash", {"command": "echo a; echo b >&2"}, timeout_s=10,
                                  output_cap=500, on_chunk=on_chunk)
    assert not r.truncated
    assert "".join(d for s, d in chunks if s == "stdout") == "a\n"
    assert "".join(d for s, d in chunks if s == "stderr") == "b\n"


async def test_file_size_limit_is_named_disk(runner: Runner) -> None:
    """A command killed by SIGXFSZ is reported with limit 'disk'."""
    r = await runner.call("bash", command="ulimit -f 1; head -c 100000 /dev/zero > big")
    assert r.limit == "disk" and r.exit_code == 128 + 25
    assert r.error is not None and r.error.code == "RESOURCE_LIMIT"


async def test_bad_input_names_the_field(runner: Runner) -> None:
    """A bad or unknown field gives INVALID_INPUT naming it, never a crash."""
    for inp in (
        {},
        {"command": 5},
        {"command": "true", "colour": 1},
        {"command": "true", "run_in_background": 1},
    ):
        r = await runner.channel.call("s", "bash", inp, timeout_s=5, output_cap=100)
        assert r.error is not None and r.error.code == "INVALID_INPUT"
    assert "command" in (await runner.channel.call("s", "bash", {}, timeout_s=5, output_cap=100)).error.message  # type: ignore[union-attr]


async def test_fork_failure_is_named_pids(runner: Runner) -> None:
    """A command that failed because fork hit EAGAIN is reported with limit 'pids'."""
    r = await runner.call("bash", command="echo 'bash: fork: retry: Resource temporarily unavailable' >&2; exit 254")
    assert r.limit == "pids" and r.exit_code == 254


async def test_large_environment_state_survives(runner: Runner) -> None:
    """Exports bigger than a pipe buffer and an argv string still persist (file and watch fallbacks)."""
    r = await runner.call("bash", command="export BIG=$(head -c 300000 /dev/zero | tr '\\0' x); sleep 0.1")
    assert r.error is None
    r = await runner.call("bash", command="echo ${#BIG}")
    assert r.output == "300000\n"


async def test_close_session_spares_processes_outside_the_runner(runner: Runner) -> None:
    """Closing a session kills only the runner's own processes: a stranger on the same host carrying a
    marker that looks like a session's (as another runner's would) survives."""
    import subprocess

    strangers = [subprocess.Popen(["sleep", "60"], env={**os.environ, "OPENANALYST_CALL": marker})
                 for marker in ("s1.b1", "s1.c1", "0123456789ab.s1.b1")]
    try:
        await runner.call("bash", command="sleep 60 &", run_in_background=True)
        await runner.channel.close_session("s")
        assert all(p.poll() is None for p in strangers)
    finally:
        for p in strangers:
            p.kill()
            p.wait()
