"""The runner's protocol loop: read frames from the host, run each call on its own thread, write results.

It never dies on bad input: a frame that is not a JSON object, or a call with bad fields, gets a
PROTOCOL_ERROR result (``id`` null when it could not be read); only an oversized length, which leaves the
stream unreadable, closes the channel as docs/design.md §1 requires.

A host that re-attaches to this runner after a crash sends ``reset`` before anything else: every call the
previous host left running is cancelled (its processes killed, as ``cancel`` does), and the answer comes once
they have ended, with the highest id this runner has seen so that the new host's ids never meet an old call's
(docs/sandbox-faults.md). Sessions, their shell state and background processes are kept.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from toolrunner.protocol import (
    DEFAULT_OUTPUT_CAP,
    MAX_FRAME,
    MAX_OUTPUT_CAP,
    MAX_RESET_WAIT_S,
    MAX_TIMEOUT_S,
    PROTOCOL_VERSION,
    FrameError,
    cut_text,
    decode,
    encode,
    frame_length,
    make_result,
)
from toolrunner.runner import code, files, identity, search, shell, stats
from toolrunner.runner.context import Call, Output, ToolFailure
from toolrunner.runner.identity import IdentityError, files_as
from toolrunner.runner.procs import REGISTRY, log
from toolrunner.runner.repl import repl
from toolrunner.runner.spares import SPARES
from toolrunner.runner.state import Runtime, Session

Tool = Callable[[Session, Call], None]
FILE_TOOLS = frozenset({"read_file", "write_file", "edit_file", "notebook_edit", "grep_search", "glob_search"})


def tools(rt: Runtime) -> dict[str, Tool]:
    ws = rt.workspace

    def with_ws(fn: Callable[[Any, Session, Call], None]) -> Tool:
        return lambda s, c: fn(ws, s, c)

    return {
        "bash": shell.bash,
        "bash_output": shell.bash_output,
        "kill_process": shell.kill_process,
        "python": code.python,
        "javascript": code.javascript,
        "powershell": code.powershell,
        "repl": repl,
        "read_file": with_ws(files.read_file),
        "write_file": with_ws(files.write_file),
        "edit_file": with_ws(files.edit_file),
        "notebook_edit": with_ws(files.notebook_edit),
        "grep_search": with_ws(search.grep_search),
        "glob_search": with_ws(search.glob_search),
    }


class Server:
    def __init__(self, rt: Runtime, in_fd: int, out_fd: int, *, egress: str = "none") -> None:
        self.rt = rt
        self.egress = egress  # the egress forwarder: "none" (no proxy socket), "listening" or "failed"
        self.tools = tools(rt)
        self._in = os.fdopen(in_fd, "rb", buffering=1 << 16)
        self._out = out_fd
        self._out_lock = threading.Lock()
        self._lock = threading.Lock()
        self.calls: dict[int, Call] = {}
        self.max_id = 0  # the highest frame id seen: a re-attached host continues past it
        # Set when the runner is going away (SIGTERM from a stopping container, or its stdin closed): the calls
        # it then kills end with no result, so the host sees the stream end and says SANDBOX_DIED, never a
        # CANCELLED that nobody asked for.
        self.closing = False
        self.sessions: dict[str, Session] = {}

    def send(self, obj: dict[str, Any]) -> None:
        if self.closing:
            return
        try:
            data = encode(obj)
        except FrameError as exc:
            if obj.get("type") != "result":
                log(f"dropped an unsendable {obj.get('type')} frame: {exc}")
                return
            # Escaping can grow output sixfold; an eighth of a frame always fits.
            output, _ = cut_text(obj["result"].get("output", ""), MAX_FRAME // 8)
            data = encode({**obj, "result": {**obj["result"], "output": output, "truncated": True}})
        with self._out_lock:
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._out, view) :]
            except OSError:
                pass  # The host is gone; the reader will see EOF and shut down.

    def serve(self) -> int:
        facts = identity.process_facts()
        self.send(
            {
                "type": "hello",
                "version": PROTOCOL_VERSION,
                "pid": os.getpid(),
                "caps": self.rt.caps,
                "egress": {"forwarder": self.egress},
                "identity": {
                    "mode": REGISTRY.identities.mode,
                    "uid": facts["uid"],
                    "cap_eff": facts["CapEff"],
                    "cap_prm": facts["CapPrm"],
                    "cap_inh": facts["CapInh"],
                    "cap_amb": facts.get("CapAmb", 0),
                    "no_new_privs": facts.get("NoNewPrivs"),
                    "dumpable": facts["dumpable"],
                    "proc_writes": "denied" if identity.tool_guard_active() else "allowed",
                },
            }
        )
        while True:
            header = self._in.read(4)
            if len(header) < 4:
                return 0 if not header else 1
            try:
                length = frame_length(header)
            except FrameError as exc:
                self.send(
                    {
                        "type": "result",
                        "id": None,
                        "result": make_result("", error=("PROTOCOL_ERROR", f"{exc}; closing the channel")),
                    }
                )
                log(f"closing: {exc}")
                return 2
            body = self._in.read(length)
            if len(body) < length:
                return 1
            try:
                self.dispatch(decode(body))
            except FrameError as exc:
                self.send({"type": "result", "id": None, "result": make_result("", error=("PROTOCOL_ERROR", str(exc)))})
            except Exception as exc:  # a bug in dispatch must not take every session down with the runner
                log(traceback.format_exc())
                self.send({"type": "result", "id": None, "result": make_result("", error=("INTERNAL", repr(exc)))})

    def dispatch(self, msg: dict[str, Any]) -> None:
        kind, mid = msg.get("type"), msg.get("id")
        if not isinstance(mid, int) or isinstance(mid, bool):
            raise FrameError(f"frame of type {kind!r} has no integer 'id'")
        self.max_id = max(self.max_id, mid)
        if kind == "call":
            self.start_call(mid, msg)
        elif kind == "cancel":
            with self._lock:
                call = self.calls.get(mid)
            if call is not None:
                call.cancel()
        elif kind == "ping":
            self.send({"type": "pong", "id": mid})
        elif kind == "stats":
            self.send({"type": "stats", "id": mid, "stats": stats.snapshot(), "holds": self.holds()})
        elif kind == "reset":
            wait = msg.get("wait_s", MAX_RESET_WAIT_S)
            if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= MAX_RESET_WAIT_S:
                self.protocol_error(mid, f"'wait_s' must be a number in [0, {MAX_RESET_WAIT_S:g}]")
                return
            if not self.spawn(lambda: self.reset(mid, float(wait))):
                self.reset(mid, float(wait))
        elif kind == "close_session":
            name = msg.get("session")
            if not isinstance(name, str):
                self.protocol_error(mid, "close_session needs a string 'session'")
                return
            self.spawn(lambda: self.close_session(mid, name))
        else:
            self.protocol_error(mid, f"unknown frame type {kind!r}")

    def holds(self) -> dict[str, int]:
        """What stopping this container would lose (the host evicts the container that holds least first):
        open sessions (shell cwd and exports), live REPLs, running background processes, calls in flight."""
        with self._lock:
            sessions, calls = list(self.sessions.values()), len(self.calls)
        return {"sessions": len(sessions), "calls": calls,
                "repls": sum(1 for s in sessions if s.repl is not None and s.repl.alive()),
                "background": sum(1 for s in sessions for b in list(s.background.values()) if not b.done.is_set())}

    def protocol_error(self, mid: int, message: str, tool: str = "") -> None:
        self.send({"type": "result", "id": mid, "result": make_result(tool, error=("PROTOCOL_ERROR", message))})

    def spawn(self, fn: Callable[[], None]) -> bool:
        try:
            threading.Thread(target=fn, daemon=True).start()
            return True
        except RuntimeError:  # "can't start new thread": the pids limit is reached
            return False

    def start_call(self, mid: int, msg: dict[str, Any]) -> None:
        tool, session, inp = msg.get("tool"), msg.get("session"), msg.get("input")
        timeout, cap = msg.get("timeout_s"), msg.get("output_cap", DEFAULT_OUTPUT_CAP)
        call_id = msg.get("call_id")  # optional: the host's id, named by the call's proxy credential
        problem = None
        if not isinstance(tool, str) or not isinstance(session, str) or not session or len(session) > 256:
            problem = "a call needs string 'tool' and 'session' (1-256 characters)"
        elif call_id is not None and (not isinstance(call_id, str) or not 0 < len(call_id) <= 256):
            problem = "'call_id' must be a string of 1-256 characters"
        elif not isinstance(inp, dict):
            problem = "a call needs an object 'input'"
        elif isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT_S:
            problem = f"'timeout_s' must be a number in (0, {MAX_TIMEOUT_S:g}]"
        elif isinstance(cap, bool) or not isinstance(cap, int) or not 0 <= cap <= MAX_OUTPUT_CAP:
            problem = f"'output_cap' must be an integer in [0, {MAX_OUTPUT_CAP}]"
        with self._lock:
            if problem is None and mid in self.calls:
                problem = f"call id {mid} is already in flight"
        if problem is not None:
            self.protocol_error(mid, problem, tool if isinstance(tool, str) else "")
            return
        assert isinstance(tool, str) and isinstance(session, str) and isinstance(inp, dict)
        assert isinstance(timeout, (int, float))
        wanted = inp.get("timeout_s")
        if isinstance(wanted, (int, float)) and not isinstance(wanted, bool) and 0 < wanted < timeout:
            timeout = wanted
        call = Call(
            mid,
            session,
            tool,
            inp,
            float(timeout),
            Output(cap, mid, self.send if msg.get("stream") else None),
            call_id,
        )
        with self._lock:
            self.calls[mid] = call
        if not self.spawn(lambda: self.run_call(call)):
            call.limit = "pids"
            self.finish(call, ("RESOURCE_LIMIT", "the runner cannot start a thread: the pids limit is reached"))

    def session(self, name: str) -> Session:
        with self._lock:
            s = self.sessions.get(name)
            if s is None:
                s = self.sessions[name] = Session(name, self.rt)
            return s

    def run_call(self, call: Call) -> None:
        error: tuple[str, str] | None = None
        extra = ""
        try:
            fn = self.tools.get(call.tool)
            if fn is None:
                raise ToolFailure("TOOL_NOT_FOUND", f"no tool named {call.tool!r}; known: {', '.join(self.tools)}")
            session = self.session(call.session)
            if call.tool in FILE_TOOLS:
                # The file tools act with the session's file-system identity: its permissions, its files.
                with files_as(session.ident):
                    fn(session, call)
            else:
                fn(session, call)
        except IdentityError as exc:
            error = ("INTERNAL", str(exc))
        except ToolFailure as exc:
            error, extra = (exc.code, exc.message), exc.output
        except Exception as exc:  # never let one call take the runner down
            log(traceback.format_exc())
            error = ("INTERNAL", f"the runner failed: {type(exc).__name__}: {exc}")
        self.finish(call, error, extra)

    def finish(self, call: Call, error: tuple[str, str] | None, extra: str = "") -> None:
        try:
            result = call.result(error, extra)
        finally:
            with self._lock:
                if self.calls.get(call.id) is call:
                    del self.calls[call.id]
        try:
            self.send({"type": "result", "id": call.id, "result": result})
        finally:
            call.reported.set()
            call.run_deferred()

    def reset(self, mid: int, wait_s: float) -> None:
        """Cancel every call in flight and answer once they have ended (or `wait_s` has passed)."""
        with self._lock:
            doomed = list(self.calls.values())
        for call in doomed:
            call.cancel()
        deadline = time.monotonic() + wait_s
        for call in doomed:  # answered after their results, so the host reads those first (and drops them)
            call.reported.wait(max(0.0, deadline - time.monotonic()))
        left = sum(not call.reported.is_set() for call in doomed)
        self.send({"type": "reset", "id": mid, "cancelled": len(doomed), "left": left, "max_id": self.max_id})

    def close_session(self, mid: int, name: str) -> None:
        with self._lock:
            s = self.sessions.pop(name, None)
            doomed = [c for c in self.calls.values() if c.session == name]
        for call in doomed:
            call.cancel()
        if s is not None:
            s.close()
        text = f"session {name!r} closed" if s is not None else f"session {name!r} had nothing to close"
        self.send({"type": "result", "id": mid, "result": make_result("close_session", text, exit_code=0)})

    def shutdown(self) -> None:
        self.closing = True
        with self._lock:
            calls, sessions = list(self.calls.values()), list(self.sessions.values())
        for call in calls:
            call.cancel()
        for s in sessions:
            s.close()
        SPARES.close()
        self.rt.cleanup()
