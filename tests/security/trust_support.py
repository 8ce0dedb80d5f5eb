"""Shared pieces of the issue-7 attack suites (test_trust_*.py): the server as a real process, a client bound to
one tenant, the audit cross-check, and Python snippets that run *inside* the sandbox to look at /proc.

Every test drives the real server over HTTP on 127.0.0.1 (``POST /v1/tools/{name}``, ``/sessions``,
``GET /v1/audit``) against the real engine, and checks what the API answered against the tool's audit
``finished`` record. Each test uses tenants of its own (``X-Tenant-ID``), so each gets a container of its own.

Waits are polls of a condition against a deadline, never fixed sleeps; pids are discovered from inside the
container through /proc and processes are recognised by a unique string in their argv, never by number.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

# The real-process server and its container clean-up live with the e2e suite; they are imported by module name
# (appended, so the e2e directory never shadows anything already importable).
_E2E = str(Path(__file__).resolve().parent.parent / "e2e")
if _E2E not in sys.path:
    sys.path.append(_E2E)

from agent_support import parse_sse, remove_server_containers, sandbox_workspace  # noqa: E402
from server_process import PROVIDER_VARS, ServerProcess, free_port  # noqa: E402

RESULT_TAG = "@@RESULT@@"

# A policy like `default`, with a shorter call timeout (a hung runner shows up within 20 + 5 s instead of 35) and
# room for the parallel calls of the race test.
POLICY = """
name = "trust"
cpus = 1.0
memory_mb = 512
pids = 256
tmpfs_mb = 64
nofile = 1024
fsize_mb = 256
default_timeout_s = 20
max_timeout_s = 120
output_cap_bytes = 262144
max_concurrent_calls = 16
network = "none"
"""
CALL_TIMEOUT_S = 20.0
GRACE_S = 5.0  # the host's grace beyond a call's timeout (toolrunner.channel)
# Bound for "answers promptly": a healthy call takes milliseconds; a hung runner takes CALL_TIMEOUT_S + GRACE_S.
PROMPT_S = 10.0


def uniq() -> str:
    return uuid.uuid4().hex[:10]


@dataclass
class Result:
    """One tool call's answer: the JSON body, the HTTP status and how long the request took."""

    body: dict[str, Any]
    status: int
    elapsed: float
    tool: str

    @property
    def output(self) -> str:
        return str(self.body.get("output") or "")

    @property
    def exit_code(self) -> int | None:
        return self.body.get("exit_code")

    @property
    def error_code(self) -> str | None:
        error = self.body.get("error")
        return error.get("code") if isinstance(error, dict) else None

    @property
    def limit(self) -> str | None:
        return self.body.get("limit")

    @property
    def call_id(self) -> str:
        return str(self.body.get("call_id"))

    def report(self) -> Any:
        """The JSON a snippet printed after RESULT_TAG (the last one), or None."""
        found = None
        for line in self.output.splitlines():
            if line.startswith(RESULT_TAG):
                found = json.loads(line[len(RESULT_TAG):])
        return found

    def brief(self) -> str:
        body = dict(self.body)
        body["output"] = self.output[:1500]
        return f"{self.tool} ({self.status}, {self.elapsed:.2f} s): {json.dumps(body)[:2500]}"


class Tenant:
    """A client acting as one tenant of the server."""

    def __init__(self, base: str, name: str) -> None:
        self.base = base
        self.name = name
        self.headers = {"X-Tenant-ID": name}
        self._local = threading.local()

    def _client(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(base_url=self.base, headers=self.headers, timeout=150)
        return client

    def session(self) -> str:
        response = self._client().post("/sessions")
        assert response.status_code == 201, response.text
        return str(response.json()["session_id"])

    def delete_session(self, session_id: str) -> int:
        return self._client().delete(f"/sessions/{session_id}").status_code

    def call(self, tool: str, input: dict[str, Any], session: str | None = None, *,
             http_timeout: float = 150) -> Result:
        body: dict[str, Any] = {"input": input}
        if session is not None:
            body["session_id"] = session
        started = time.monotonic()
        response = self._client().post(f"/v1/tools/{tool}", json=body, timeout=http_timeout)
        elapsed = time.monotonic() - started
        try:
            data = response.json()
        except ValueError:
            data = {"output": response.text, "error": {"code": f"HTTP_{response.status_code}"}}
        if "error" in data and response.status_code != 200 and "call_id" not in data:
            data = {"output": "", "exit_code": None, "error": data.get("error"), "limit": None}
        return Result(data, response.status_code, elapsed, tool)

    def stream(self, tool: str, input: dict[str, Any], session: str | None = None) -> tuple[str, Result]:
        """A streamed call: (the concatenated tool_output chunks, the final tool_result)."""
        body: dict[str, Any] = {"input": input, "stream": True}
        if session is not None:
            body["session_id"] = session
        chunks: list[str] = []
        final: dict[str, Any] = {"output": "", "error": {"code": "NO_TOOL_RESULT"}}
        started = time.monotonic()
        with self._client().stream("POST", f"/v1/tools/{tool}", json=body, timeout=150) as response:
            status = response.status_code
            for kind, data, _ in parse_sse(response.iter_lines()):
                if kind == "tool_output":
                    chunks.append(str(data.get("data", "")))
                elif kind == "tool_result":
                    final = data
                elif kind == "error":
                    final = {"output": "", "error": data}
        return "".join(chunks), Result(final, status, time.monotonic() - started, tool)

    def bash(self, command: str, session: str | None = None, **extra: Any) -> Result:
        return self.call("bash", {"command": command, **extra}, session)

    def python(self, code: str, session: str | None = None, **extra: Any) -> Result:
        return self.call("python", {"code": code, **extra}, session)

    def background(self, command: str, session: str) -> str:
        """Start `command` with run_in_background in `session`; returns its id."""
        result = self.call("bash", {"command": command, "run_in_background": True}, session)
        assert result.error_code is None and "id " in result.output, result.brief()
        return result.output.split("id ", 1)[1].split()[0]

    def finished(self, call_id: str, tool: str) -> dict[str, Any]:
        """The audit `finished` record of one call (the server writes it before it answers)."""
        page = 1
        while True:
            response = self._client().get("/v1/audit", params={"tool": tool, "phase": "finished", "page": page,
                                                                "per_page": 100})
            assert response.status_code == 200, response.text
            body = response.json()
            for record in body["data"]:
                if record["call_id"] == call_id:
                    return dict(record)
            if page >= body["meta"]["total_pages"]:
                raise AssertionError(f"no audit finished record for {call_id} ({tool}) of tenant {self.name}")
            page += 1

    def drop_sandbox(self) -> None:
        """Throw the tenant's container away (best effort: frees CPU and memory for the next tests)."""
        with contextlib.suppress(httpx.HTTPError):
            self._client().delete("/v1/sandbox", timeout=60)

    def close(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()


def audited(tenant: Tenant, result: Result) -> dict[str, Any]:
    """The audit record of `result`, checked to agree with what the API answered."""
    record = tenant.finished(result.call_id, result.tool)
    problems = []
    fields = (("exit_code", result.exit_code), ("limit", result.limit),
              ("timed_out", result.body.get("timed_out")), ("error_code", result.error_code))
    for key, api in fields:
        if record.get(key) != api:
            problems.append(f"{key}: API {api!r}, audit {record.get(key)!r}")
    if not record.get("output_truncated") and record.get("output") != result.output:
        problems.append(f"output: API {result.output[:300]!r}, audit {str(record.get('output'))[:300]!r}")
    assert not problems, f"API and audit disagree for {result.call_id}: {problems}"
    return record


# The runner's own note when it killed what a call left running (docs/runner-trust.md §4); not the command's output.
KILL_NOTE = re.compile(r"\n\[killed \d+ process\(es\) the command left running\]\Z")


def without_kill_note(text: str) -> str:
    return KILL_NOTE.sub("", text)


def expect(tenant: Tenant, result: Result, *, exit_code: int | None, output: str | None = None,
           within: float | None = None, forbidden: tuple[str, ...] = (), kill_note: bool = True) -> list[str]:
    """What is wrong with `result` (API and audit), as messages; empty when it is exactly as expected.

    `output` is compared exactly, except that the runner's note on killed leftovers is ignored unless
    `kill_note` is False (then the output must be exactly `output`, note or not)."""
    def own(text: str) -> str:
        return without_kill_note(text) if kill_note else text

    problems: list[str] = []
    if result.status != 200:
        problems.append(f"HTTP {result.status}")
    if result.error_code is not None:
        problems.append(f"error {result.body.get('error')}")
    if result.exit_code != exit_code:
        problems.append(f"exit_code {result.exit_code!r}, expected {exit_code!r}")
    if output is not None and own(result.output) != output:
        problems.append(f"output {result.output[:600]!r}, expected {output!r}")
    for text in forbidden:
        if text in result.output:
            problems.append(f"output contains {text!r}")
    if within is not None and result.elapsed > within:
        problems.append(f"took {result.elapsed:.1f} s (bound {within:.0f} s)")
    if result.status == 200:
        try:
            record = tenant.finished(result.call_id, result.tool)
        except AssertionError as exc:
            problems.append(str(exc))
        else:
            if record.get("exit_code") != exit_code:
                problems.append(f"audit exit_code {record.get('exit_code')!r}, expected {exit_code!r}")
            if output is not None and own(str(record.get("output"))) != output:
                problems.append(f"audit output {str(record.get('output'))[:600]!r}, expected {output!r}")
            for text in forbidden:
                if text in str(record.get("output")):
                    problems.append(f"audit output contains {text!r}")
    return [f"{result.tool} call {result.call_id}: {p}" for p in problems]


def check_all(problems: list[str], note: str = "") -> None:
    """Fail with every problem found (and `note`, for context), so one run says everything that went wrong."""
    assert not problems, "\n".join([*problems, note] if note else problems)


@dataclass
class TrustServer:
    base: str
    process: ServerProcess
    _tenants: list[Tenant] = field(default_factory=list)

    def tenant(self, prefix: str) -> Tenant:
        made = Tenant(self.base, f"{prefix[:40]}-{uniq()}")
        self._tenants.append(made)
        return made


@pytest.fixture(scope="module")
def trust(sandbox_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrustServer]:
    """One real server per module (tenants keep tests apart); every container it made is removed at the end."""
    root = tmp_path_factory.mktemp("trust")
    policy = root / "trust.toml"
    policy.write_text(POLICY)
    data_dir = root / "data"
    env = {k: v for k, v in os.environ.items() if k not in PROVIDER_VARS and not k.startswith("OPENANALYST_")}
    env |= {"OPENANALYST_DATA_DIR": str(data_dir), "OPENANALYST_LOG_LEVEL": "warning", "PYTHONUNBUFFERED": "1",
            "OPENANALYST_SANDBOX_LABELS": json.dumps({"openanalyst.test": "1"}),
            "OPENANALYST_OWNER_WORKSPACE": str(sandbox_workspace(root / "owner-ws")),
            "OPENANALYST_SANDBOX_POLICY": str(policy)}
    process = ServerProcess(data_dir, free_port(), env, [])
    server = TrustServer(process.base, process)
    try:
        process.wait_ready(timeout=60)
        yield server
    finally:
        for tenant in server._tenants:
            tenant.close()
        if process.proc.poll() is None:
            process.stop(timeout=60)
        client = docker.from_env(timeout=120)
        try:
            remove_server_containers(client, data_dir)
        finally:
            client.close()


@pytest.fixture
def tenants(trust: TrustServer) -> Iterator[Callable[[str], Tenant]]:
    """``tenants(prefix)`` makes a tenant of this test; their containers are thrown away after it."""
    made: list[Tenant] = []

    def make(prefix: str) -> Tenant:
        made.append(trust.tenant(prefix))
        return made[-1]

    yield make
    for tenant in made:
        tenant.drop_sandbox()


_BG_STATUS = re.compile(r"\n?\[process \S+ (is still running|exited with code -?\d+)\]\Z")


def background_output(tenant: Tenant, bid: str, session: str, timeout: float = 60.0) -> tuple[str, Result]:
    """Poll ``bash_output`` until background process `bid` has exited: (everything it printed, in order, without
    the status notes; the last answer). Each answer holds only what the previous one did not."""
    parts: list[str] = []

    def poll() -> Result | None:
        result = tenant.call("bash_output", {"id": bid}, session)
        parts.append(_BG_STATUS.sub("", result.output))
        return result if result.exit_code is not None or result.error_code is not None else None

    last = wait_until(poll, timeout, f"background process {bid} to exit")
    return "".join(parts), last


def in_parallel(fn: Callable[[], Result]) -> tuple[ThreadPoolExecutor, Future[Result]]:
    """Start one blocking call on a worker thread (the caller shuts the pool down)."""
    pool = ThreadPoolExecutor(1)
    return pool, pool.submit(fn)


# --- Python run inside the sandbox ---------------------------------------------------------------------------

# Prepended to every snippet: /proc helpers, a deadline-bounded wait for a file, and the report line.
PROC_LIB = r'''
import errno, json, os, sys, time

def pids():
    return sorted(int(n) for n in os.listdir("/proc") if n.isdigit())

def argv(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return None

def cmdline(pid):
    a = argv(pid)
    return None if a is None else " ".join(a)

def status(pid):
    d = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                d[k] = v.strip()
    except OSError:
        return None
    return d

def uid_of(pid):
    s = status(pid)
    return None if not s else int(s["Uid"].split()[0])

def state_of(pid):
    s = status(pid)
    return None if not s else s.get("State", "?")[:1]

def runner_pid():
    """The runner: the oldest process whose argv runs the toolrunner.runner module (PID 1 is only its init)."""
    found = []
    for p in pids():
        a = argv(p) or []
        if p != 1 and a and "toolrunner.runner" in a and "init" not in os.path.basename(a[0]):
            found.append(p)
    return min(found) if found else None

def marked(mark):
    """Live (non-zombie) processes whose argv contains `mark`: [pid, uid, state, cmdline]."""
    out = []
    for p in pids():
        c = cmdline(p)
        if c and mark in c and p != os.getpid():
            st = state_of(p)
            if st not in (None, "Z", "X"):
                out.append([p, uid_of(p), st, c[:200]])
    return out

def wait_for(path, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {path}")
        time.sleep(0.01)

def emit(obj):
    print("@@RESULT@@" + json.dumps(obj), flush=True)
'''


def snippet(body: str, **config: Any) -> str:
    """A Python program for the `python` tool: PROC_LIB, ``CFG`` (the keyword arguments), then `body`."""
    return f"{PROC_LIB}\nCFG = json.loads({json.dumps(json.dumps(config))})\n{body}"


# A process that waits (polling a file, with a deadline) and carries `mark` in its argv; run by `bash` calls of a
# victim session so that its call is in flight, and findable, while an attacker acts.
WAITER = ("import os, sys, time\n"
          "d = time.monotonic() + float(sys.argv[2])\n"
          "while not os.path.exists(sys.argv[1]):\n"
          "    if time.monotonic() > d:\n"
          "        print('WAITER-GAVE-UP'); sys.exit(9)\n"
          "    time.sleep(0.01)\n")


def victim_command(ready: str, go: str, mark: str, say: str) -> str:
    """bash text: announce `ready`, wait (as a process whose argv holds `mark`) for `go`, then print `say`."""
    quoted = WAITER.replace("'", "'\\''")
    return (f": > {ready}; python3 -c '{quoted}' {go} 60 {mark} && printf '%s\\n' {say}")


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `condition` until it returns something truthy or the deadline passes (then fail saying `what`)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)  # poll interval of a condition with a deadline, not a synchronisation sleep
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
