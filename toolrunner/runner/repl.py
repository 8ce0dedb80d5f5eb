"""The `repl` tool: one persistent Python interpreter per session (``repl_child.py``), framed over pipes.

It runs as the session's uid, so no other session can reach it. Its replies come from inside the interpreter
that runs the session's code, so that code can shape its own calls' replies (there is no process exit status
to take from the kernel); what it cannot do is answer for a call before the request was sent, or for any
other tool or session.

A call that runs past its deadline (or is cancelled) gets SIGINT; if the interpreter does not answer within
a grace period it is killed with its process group and started fresh on the next call, and the result says
so. Calls of one session are serialised: there is one interpreter.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import struct
import subprocess
import time

from toolrunner.protocol import MAX_FRAME
from toolrunner.runner import stats
from toolrunner.runner.context import Call, ToolFailure, check_fields, opt_bool, require_str
from toolrunner.runner.procs import REGISTRY, exit_fd, kill_tree
from toolrunner.runner.state import Session

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "repl_child.py")
GRACE_S = 2.0


class Repl:
    """A running interpreter: its process, control pipes and output pipes."""

    def __init__(self, session: Session) -> None:
        self.session = session
        req_r, self._req_w = os.pipe()
        self._rep_r, rep_w = os.pipe()
        try:
            self.proc = REGISTRY.spawn(
                [session.runtime.python, "-I", "-u", CHILD, str(req_r), str(rep_w)],
                session.ident,
                "repl",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(req_r, rep_w),
                cwd=session.runtime.workspace.root,
                env=session.env_without_credential(),  # each call sends its own proxy variables
            )
        except OSError as exc:
            for fd in (self._req_w, self._rep_r):
                os.close(fd)
            raise ToolFailure("RESOURCE_LIMIT", f"cannot start the interpreter: {exc.strerror}") from None
        finally:
            os.close(req_r)
            os.close(rep_w)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.outputs = {self.proc.stdout.fileno(): "stdout", self.proc.stderr.fileno(): "stderr"}
        for fd in [*self.outputs, self._rep_r]:
            os.set_blocking(fd, False)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        kill_tree(self.proc.pid)
        REGISTRY.finish(self.proc)
        REGISTRY.sweep(self.session.ident)
        for fd in (self._req_w, self._rep_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def execute(self, call: Call, code: str) -> dict[str, object] | None:
        """Run `code`; the reply ({ok, value}), or None if the interpreter had to be killed or died."""
        # The call's proxy variables go into the interpreter's os.environ before its code runs, so what the
        # code starts or connects with carries this call's credential (docs/egress.md says what a thread an
        # earlier call left running does).
        request = {"code": code, "env": self.session.proxy_env(call.call_id)}
        body = json.dumps(request).encode("utf-8", "surrogatepass")
        # A reply written between calls (by code that ran in the interpreter, or a thread it left) is not
        # this call's: only what arrives after the request counts. Stale output is dropped the same way.
        for fd in (self._rep_r, *self.outputs):
            with contextlib.suppress(OSError):
                while os.read(fd, 65536):
                    pass
        try:
            os.write(self._req_w, struct.pack(">I", len(body)))
            _write_all(self._req_w, body)
        except OSError:
            return None
        reply = bytearray()
        interrupted_at: float | None = None
        pidfd = exit_fd(self.proc.pid)
        sel = selectors.DefaultSelector()
        try:
            for fd in [*self.outputs, self._rep_r, pidfd]:
                sel.register(fd, selectors.EVENT_READ)
            while True:
                now = time.perf_counter()
                if interrupted_at is None and (now >= call.deadline or call.cancelled.is_set()):
                    if not call.cancelled.is_set():
                        call.timed_out, call.limit = True, "timeout"
                    interrupted_at = now
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.proc.pid, signal.SIGINT)
                if interrupted_at is not None and now - interrupted_at > GRACE_S:
                    return None
                wait = min(0.1, max(0.0, call.deadline - now)) if interrupted_at is None else 0.05
                for key, _ in sel.select(wait):
                    fd = int(key.fd)
                    if fd == pidfd:
                        self._drain(call)
                        return None
                    if fd == self._rep_r:
                        with contextlib.suppress(BlockingIOError):
                            reply += os.read(fd, 65536)
                        if len(reply) >= 4 and len(reply) - 4 >= min(struct.unpack(">I", reply[:4])[0], MAX_FRAME):
                            self._drain(call)
                            answer: dict[str, object] = json.loads(reply[4:].decode())
                            return answer
                    else:
                        with contextlib.suppress(BlockingIOError):
                            call.output.add(os.read(fd, 65536), self.outputs[fd])
        finally:
            sel.close()
            os.close(pidfd)

    def _drain(self, call: Call) -> None:
        """Read what the interpreter wrote before it answered (it flushes first)."""
        for fd, stream in self.outputs.items():
            while True:
                try:
                    data = os.read(fd, 65536)
                except (BlockingIOError, OSError):
                    break
                if not data:
                    break
                call.output.add(data, stream)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def repl(session: Session, call: Call) -> None:
    check_fields(call.input, {"code", "timeout_s", "restart"})
    code = require_str(call.input, "code")
    restart = opt_bool(call.input, "restart")
    with session.repl_lock:
        if session.closed:
            raise ToolFailure("INVALID_INPUT", "the session was closed")
        notes = []
        if session.repl is not None and (restart or not session.repl.alive()):
            if not session.repl.alive() and not restart:
                notes.append("[the previous interpreter had exited; started a fresh one, names were lost]")
            session.repl.stop()
            session.repl = None
        if session.repl is None:
            session.repl = Repl(session)
        current = session.repl  # close_session may clear session.repl while this call runs
        if session.closed:
            current.stop()
            raise ToolFailure("CANCELLED", "the session was closed")
        oom_before = stats.memory_marks()
        answer = current.execute(call, code) if code.strip() else {"ok": True, "value": None}
        if answer is None:
            died = current.alive() is False and not (call.timed_out or call.cancelled.is_set())
            if died and current.proc.returncode == -signal.SIGKILL and stats.oom_since(oom_before):
                call.limit = "memory"
                call.failure = ("RESOURCE_LIMIT", "the interpreter was killed: the sandbox ran out of memory")
            current.stop()
            if session.repl is current:
                session.repl = None
            notes.append(
                "[the interpreter exited; the next call starts a fresh one, names were lost]"
                if died
                else "[the interpreter did not stop after an interrupt: it was killed and the next call "
                "starts a fresh one, names were lost]"
            )
            call.exit_code = 1
        else:
            if call.timed_out:
                notes.append("[interrupted by the timeout; names defined so far are kept]")
            value = answer.get("value")
            if isinstance(value, str):
                call.output.add(value.encode("utf-8", "surrogatepass") + b"\n")
            call.exit_code = 0 if answer.get("ok") else 1
        if restart and not notes:
            notes.insert(0, "[started a fresh interpreter]")
        call.note = "\n".join(notes)
