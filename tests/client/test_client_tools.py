"""The direct tool API through the client against the real server and a real sandbox: typed results and
streams, typed errors with the server's codes, tenant and API key from the environment, and the bounded
Retry-After retry when the tenant's concurrent-call cap is full."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agent_support import sandbox_workspace
from openanalyst_client import (
    AsyncClient,
    AuthenticationError,
    Client,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableError,
)
from openanalyst_client.events import ToolOutputEvent, ToolResultEvent

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(120)]

POLICY = """
name = "one-at-a-time"
cpus = 0.5
memory_mb = 256
pids = 128
tmpfs_mb = 16
nofile = 256
fsize_mb = 16
default_timeout_s = 20
max_timeout_s = 60
output_cap_bytes = 4096
max_concurrent_calls = 1
denied_tools = ["javascript"]
"""


@pytest.fixture
def server(serve: Callable[..., Any], sandbox_image: str, tmp_path: Path) -> Any:
    """Tenant bob runs one call at a time and may not use javascript; everyone else has the default."""
    policy = tmp_path / "one.toml"
    policy.write_text(POLICY)
    return serve(env={"OPENANALYST_OWNER_WORKSPACE": str(sandbox_workspace(tmp_path / "owner-ws")),
                      "OPENANALYST_TENANT_POLICIES": json.dumps({"bob": str(policy)})})


def test_call_stream_and_session(server: Any) -> None:
    """`tools.call` answers a typed result; `tools.stream` yields typed output chunks then the result; a call
    with a session id shares the session's shell and shows in its events."""
    with Client(server.base, tenant="carol") as oa:
        tools = {t.name: t for t in oa.tools.list()}
        assert tools["bash"].where == "sandbox" and tools["bash"].input_schema["required"] == ["command"]
        assert (tools["bash"].available, tools["bash"].unavailable_code) == (True, None)
        search = tools["web_search"]  # no search backend on this server: listed, not available, and why
        assert (search.available, search.unavailable_code) == (False, "TOOL_UNAVAILABLE") and search.unavailable_reason
        answer = oa.tools.call("bash", {"command": "echo hi; exit 3"})
        assert (answer.output, answer.exit_code, answer.error, answer.tool_name) == ("hi\n", 3, None, "bash")
        assert answer.call_id.startswith("call_")
        session = oa.sessions.create(title="tools")
        oa.tools.call("bash", {"command": "export GREETING=hello"}, session_id=session.session_id)
        events = list(oa.tools.stream("bash", {"command": "echo $GREETING; echo oops >&2"},
                                      session_id=session.session_id))
        chunks = [e for e in events if isinstance(e, ToolOutputEvent)]
        assert {(c.stream, c.data) for c in chunks} == {("stdout", "hello\n"), ("stderr", "oops\n")}
        result = events[-1]
        assert isinstance(result, ToolResultEvent) and result.exit_code == 0 and result.call_id == chunks[0].call_id
        detail = oa.sessions.get(session.session_id)
        assert detail.last_seq == 4  # two calls: tool_call and tool_result each


def test_errors_are_typed(server: Any) -> None:
    """Unknown tool, bad input and a policy denial raise typed errors carrying the server's code, message
    and status; a 404 is also a LookupError and a 422 a ValueError for broad catches."""
    with Client(server.base, tenant="bob") as oa:
        with pytest.raises(NotFoundError) as missing:
            oa.tools.call("teleport", {})
        assert (missing.value.code, missing.value.status) == ("TOOL_NOT_FOUND", 404)
        assert isinstance(missing.value, LookupError) and "teleport" in missing.value.message
        with pytest.raises(ValueError) as invalid:
            oa.tools.call("bash", {"command": 3})
        assert isinstance(invalid.value, UnprocessableError) and invalid.value.code == "INVALID_TOOL_INPUT"
        with pytest.raises(PermissionDeniedError) as denied:
            oa.tools.call("javascript", {"code": "1"})
        assert (denied.value.code, denied.value.status) == ("TOOL_DENIED", 403)
        with pytest.raises(PermissionDeniedError):
            list(oa.tools.stream("javascript", {"code": "1"}))


def _fill_cap(base: str, seconds: float) -> threading.Thread:
    """Take bob's only call slot with a sleeping call; returns once it has started (its first output)."""
    started = threading.Event()

    def hold() -> None:
        with Client(base, tenant="bob") as holder:
            for event in holder.tools.stream("bash", {"command": f"echo go; sleep {seconds}"}):
                if isinstance(event, ToolOutputEvent):
                    started.set()

    worker = threading.Thread(target=hold)
    worker.start()
    assert started.wait(30), "the sleeping call never started"
    return worker


def test_retry_after_on_full_call_cap(server: Any) -> None:
    """With bob's one slot taken, a client without retries gets RateLimitError (429 TOO_MANY_CALLS,
    Retry-After 1); the default client waits as told and its call, plain or streamed, succeeds once the slot
    is free."""
    worker = _fill_cap(server.base, 2)
    with Client(server.base, tenant="bob", max_retries=0) as impatient:
        with pytest.raises(RateLimitError) as refused:
            impatient.tools.call("bash", {"command": "true"})
        assert (refused.value.code, refused.value.status, refused.value.retry_after) == ("TOO_MANY_CALLS", 429, 1)
    with Client(server.base, tenant="bob") as oa:
        started = time.monotonic()
        answer = oa.tools.call("bash", {"command": "echo finally"})
        waited = time.monotonic() - started
        retries = oa.retries
        assert answer.output == "finally\n" and 1 <= retries <= 3 and waited >= 1.0
        worker.join(30)
        # A streamed call over the cap is refused inside its stream (a 429 `error` event before anything
        # ran): the client opens it again under the same bound, and the caller sees only the real call.
        worker = _fill_cap(server.base, 2)
        events = list(oa.tools.stream("bash", {"command": "echo streamed"}))
        assert [e.type for e in events] == ["tool_output", "tool_result"] and oa.retries > retries
        worker.join(30)
        finished = oa.audit.list(tool="bash", phase="finished", per_page=100).data
    codes = [r.error_code for r in finished]  # each refused attempt is audited with its real code
    assert codes.count("TOO_MANY_CALLS") == 1 + oa.retries and codes.count(None) == 4


def test_async_client_and_retry(server: Any) -> None:
    """The async client does the same: typed call, typed stream, and Retry-After retries."""
    async def scenario() -> None:
        async with AsyncClient(server.base, tenant="bob") as oa:
            answer = await oa.tools.call("bash", {"command": "echo async"})
            assert answer.output == "async\n"
            async with oa.tools.stream("bash", {"command": "echo streamed"}) as stream:
                kinds = [event.type async for event in stream]
            assert kinds == ["tool_output", "tool_result"]
            worker = await asyncio.to_thread(_fill_cap, server.base, 1.5)
            retried = await oa.tools.call("bash", {"command": "echo later"})
            assert retried.output == "later\n" and oa.retries >= 1
            await asyncio.to_thread(worker.join, 30)

    asyncio.run(scenario())


def test_tenant_and_key_from_environment(serve: Callable[..., Any], tmp_path: Path, openanalyst_cmd: list[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """With require_api_key, `Client()` takes the URL and the bearer key from the environment; the key's
    tenant is the caller's; without a key the server's 401 is an AuthenticationError."""
    data = tmp_path / "keys"
    server = serve(env={"OPENANALYST_REQUIRE_API_KEY": "true"}, data_dir=data)
    made = subprocess.run([*openanalyst_cmd, "--data-dir", str(data), "keys", "create", "--tenant", "acme"],
                          capture_output=True, text=True, timeout=30, check=True)
    monkeypatch.setenv("OPENANALYST_SERVER_URL", server.base)
    with Client() as anonymous, pytest.raises(AuthenticationError) as refused:
        anonymous.me()
    assert refused.value.status == 401
    monkeypatch.setenv("OPENANALYST_SERVER_API_KEY", made.stdout.strip())
    monkeypatch.setenv("OPENANALYST_TENANT", "someone-else")  # a bound key wins over the header
    with Client() as oa:
        me = oa.me()
        assert me.tenant == "acme" and oa.config.base_url == server.base
        assert oa.sessions.create().session_id in {s.session_id for s in oa.iter_sessions()}
