"""The persistent REPL and the one-shot code tools, against the real runner subprocess."""

from __future__ import annotations

import shutil

import pytest
from runner_support import Runner, pid_alive, wait_until

pytestmark = pytest.mark.anyio


async def test_names_persist_and_trailing_expression_is_shown(runner: Runner) -> None:
    """Names defined in one repl call are there in the next; a trailing expression's repr is returned."""
    r = await runner.call("repl", code="import math\nx = 21\nprint('side effect')")
    assert r.output == "side effect\n" and r.exit_code == 0
    r = await runner.call("repl", code="y = x * 2\n{'y': y, 'pi': round(math.pi, 2)}")
    assert r.output == "{'y': 42, 'pi': 3.14}\n"


async def test_traceback_is_returned_and_names_survive(runner: Runner) -> None:
    """An exception gives its traceback and exit code 1 without losing the interpreter's names."""
    await runner.call("repl", code="kept = 'yes'")
    r = await runner.call("repl", code="def f():\n    raise ValueError('boom')\nf()")
    assert r.exit_code == 1 and "ValueError: boom" in r.output and "Traceback" in r.output
    assert "repl_child" not in r.output
    assert (await runner.call("repl", code="kept")).output == "'yes'\n"


async def test_sessions_have_separate_interpreters(runner: Runner) -> None:
    """A name from one session's REPL is unknown in another's."""
    await runner.call("repl", session="a", code="only_a = 1")
    r = await runner.call("repl", session="b", code="only_a")
    assert r.exit_code == 1 and "NameError" in r.output


async def test_timeout_interrupts_and_keeps_names(runner: Runner) -> None:
    """A repl call past its timeout is interrupted (KeyboardInterrupt); earlier names are kept."""
    await runner.call("repl", code="before = 1")
    r = await runner.call("repl", code="import time\nwhile True: time.sleep(0.01)", timeout_s=0.5)
    assert r.timed_out and r.limit == "timeout" and "KeyboardInterrupt" in r.output
    assert (await runner.call("repl", code="before")).output == "1\n"


@pytest.mark.timeout(30)
async def test_stubborn_code_is_killed_and_the_repl_restarts(runner: Runner) -> None:
    """Code that swallows the interrupt is killed; the result says so and the next call gets a fresh one."""
    await runner.call("repl", code="lost = 1")
    code = "\n".join(
        [
            "import time",
            "while True:",
            "    try:",
            "        time.sleep(0.01)",
            "    except KeyboardInterrupt:",
            "        pass",
        ]
    )
    r = await runner.call("repl", code=code, timeout_s=0.3)
    assert r.timed_out and "killed" in r.output
    r = await runner.call("repl", code="'lost' in globals()")
    assert r.output == "False\n"


async def test_restart_starts_fresh(runner: Runner) -> None:
    """restart: true throws the old interpreter away."""
    await runner.call("repl", code="gone = 1")
    r = await runner.call("repl", code="'gone' in globals()", restart=True)
    assert "False" in r.output


async def test_exit_in_repl_does_not_kill_it(runner: Runner) -> None:
    """SystemExit raised by user code is reported; the interpreter keeps running."""
    await runner.call("repl", code="alive = 1")
    r = await runner.call("repl", code="raise SystemExit(3)")
    assert r.exit_code == 1 and "SystemExit" in r.output
    assert (await runner.call("repl", code="alive")).output == "1\n"


async def test_python_one_shot(runner: Runner) -> None:
    """python runs code once in a fresh interpreter from the workspace root."""
    (runner.ws / "data.txt").write_text("hello")
    r = await runner.call("python", code="import sys\nprint(open('data.txt').read())\nsys.exit(2)")
    assert r.output == "hello\n" and r.exit_code == 2


async def test_python_timeout(runner: Runner) -> None:
    """A one-shot python past its timeout is killed and says so."""
    r = await runner.call("python", code="import time\nprint('x', flush=True)\ntime.sleep(30)", timeout_s=0.5)
    assert r.timed_out and r.output.startswith("x")


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed on this host")
async def test_javascript_one_shot(runner: Runner) -> None:
    """javascript runs code once with node."""
    r = await runner.call("javascript", code="console.log(6 * 7)")
    assert r.output == "42\n" and r.exit_code == 0


@pytest.mark.skipif(shutil.which("pwsh") is not None, reason="pwsh is installed here")
async def test_powershell_unavailable(runner: Runner) -> None:
    """Without pwsh in the image, powershell answers TOOL_UNAVAILABLE saying so."""
    r = await runner.call("powershell", command="Get-Date")
    assert r.error is not None and r.error.code == "TOOL_UNAVAILABLE" and "pwsh" in r.error.message


async def test_unknown_tool(runner: Runner) -> None:
    """An unknown tool name gives TOOL_NOT_FOUND."""
    r = await runner.call("rm_rf")
    assert r.error is not None and r.error.code == "TOOL_NOT_FOUND"


async def test_close_session_ends_the_interpreter(runner: Runner) -> None:
    """close_session kills the session's interpreter and any process it started."""
    r = await runner.call(
        "repl", code="import os, subprocess\nchild = subprocess.Popen(['sleep', '300'])\n(os.getpid(), child.pid)"
    )
    pids = [int(x) for x in r.output.strip("()\n").split(",")]
    await runner.channel.close_session("s")
    assert await wait_until(lambda: not any(pid_alive(p) for p in pids))
    assert (await runner.call("repl", code="'child' in globals()")).output == "False\n"


async def test_interpreter_that_exits_is_replaced(runner: Runner) -> None:
    """If user code ends the interpreter process, the call says so and the next call gets a fresh one."""
    await runner.call("repl", code="lost = 1")
    r = await runner.call("repl", code="import os\nos._exit(3)")
    assert r.exit_code == 1 and "interpreter exited" in r.output
    assert (await runner.call("repl", code="'lost' in globals()")).output == "False\n"
