"""What spec clients tripped over (issue 10 point 4), through the server as a real process: an email as
X-Tenant-ID gets its own workspace under a safe name while an old-style id keeps its directory; a model no
configured provider serves is refused instead of answered by another vendor's model; answers name provider
and model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_support import read_until_idle, sandbox_workspace, server_env
from fakes.anthropic import FakeAnthropic
from fakes.reply import Reply

from server.tenant_ids import tenant_name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

EMAIL = {"X-Tenant-ID": "alice@example.com"}


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def server(serve: Callable[..., Any], fake: FakeAnthropic, tmp_path: Path) -> Iterator[Any]:
    process = serve(env=server_env(fake.base_url, sandbox_workspace(tmp_path / "owner-ws")))
    yield process
    if process.proc.poll() is None:
        assert process.stop() == 0


@pytest.mark.docker
def test_email_tenant_gets_its_own_safe_workspace(server: Any, fake: FakeAnthropic, sandbox_image: str) -> None:
    """Sessions, the sandbox and the workspace all work for an email id; the directory is the mapped name,
    an old-style id keeps its own name, and the two tenants do not see each other's sessions."""
    fake.script([Reply.tool_call("bash", {"command": "echo from-email > note.txt && cat note.txt"}),
                 Reply.text("done"),
                 Reply.tool_call("bash", {"command": "echo from-team > note.txt"}), Reply.text("done")])
    me = httpx.get(f"{server.base}/me", headers=EMAIL).json()
    assert me["tenant"] == "alice@example.com" and me["is_owner"] is False
    results = {}
    for headers in (EMAIL, {"X-Tenant-ID": "team-alpha"}):
        sid = httpx.post(f"{server.base}/sessions", headers=headers).json()["session_id"]
        with httpx.stream("POST", f"{server.base}/sessions/{sid}/message", json={"message": "go"},
                          headers=headers, timeout=120) as response:
            assert response.status_code == 200
            events = read_until_idle(response)
        results[headers["X-Tenant-ID"]] = (sid, next(d for k, d, _ in events if k == "tool_result"))
    assert results["alice@example.com"][1]["exit_code"] == 0
    assert results["alice@example.com"][1]["output"] == "from-email\n"
    workspaces = server.data_dir / "workspaces"
    mapped = tenant_name("alice@example.com")
    assert mapped.startswith("alice_example.com--")
    assert (workspaces / mapped / "note.txt").read_text() == "from-email\n"
    assert (workspaces / "team-alpha" / "note.txt").read_text() == "from-team\n"  # unchanged naming
    assert sorted(p.name for p in workspaces.iterdir() if p.is_dir()) == sorted([mapped, "team-alpha"])
    listed = httpx.get(f"{server.base}/sessions", headers=EMAIL).json()["data"]
    assert [s["session_id"] for s in listed] == [results["alice@example.com"][0]]
    # A different case of the same email is a different tenant (ids are compared exactly).
    assert httpx.get(f"{server.base}/sessions", headers={"X-Tenant-ID": "Alice@example.com"}).json()["data"] == []


def test_unserved_model_is_refused_and_answers_name_their_model(server: Any, fake: FakeAnthropic) -> None:
    """Only Anthropic configured: gpt-4o is a 400 MODEL_NOT_AVAILABLE (JSON and SSE), nothing reaches the
    fake; a Claude model is answered and the usage names provider and model."""
    refused = httpx.post(f"{server.base}/v1/chat", json={"message": "hi", "model": "gpt-4o", "stream": False},
                         timeout=60)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "MODEL_NOT_AVAILABLE" and "'gpt-4o'" in error["message"] and "anthropic" in error["message"]
    with httpx.stream("POST", f"{server.base}/v1/chat", json={"message": "hi", "model": "gpt-4o"},
                      timeout=60) as response:
        events = read_until_idle(response)
    assert [d["code"] for k, d, _ in events if k == "error"] == ["MODEL_NOT_AVAILABLE"]
    assert next(d for k, d, _ in events if k == "error")["status"] == 400
    assert fake.requests == []

    fake.script([Reply.text("claude answers")])
    answer = httpx.post(f"{server.base}/v1/chat", json={"message": "hi", "model": "claude-sonnet-4-5",
                                                        "stream": False}, timeout=60).json()
    assert answer["message"] == "claude answers"
    assert (answer["usage"]["provider"], answer["usage"]["model"]) == ("anthropic", "claude-sonnet-4-5")


def test_substitution_allowed_by_setting(serve: Callable[..., Any], fake: FakeAnthropic, tmp_path: Path) -> None:
    process = serve(env=server_env(fake.base_url, sandbox_workspace(tmp_path / "owner-ws"),
                                   OPENANALYST_ALLOW_MODEL_SUBSTITUTION="true"))
    fake.script([Reply.text("substituted")])
    answer = httpx.post(f"{process.base}/v1/chat", json={"message": "hi", "model": "gpt-4o", "stream": False},
                        timeout=60).json()
    assert answer["message"] == "substituted"
    assert (answer["usage"]["provider"], answer["usage"]["model"]) == ("anthropic", "claude-sonnet-4-5")


def test_partial_aws_settings_start_with_a_warning(serve: Callable[..., Any]) -> None:
    process = serve(env={"AWS_ACCESS_KEY_ID": "AKIAPARTIAL00000", "OPENANALYST_LOG_LEVEL": "warning"})
    assert httpx.get(process.base + "/health").status_code == 200
    assert any("Bedrock is disabled: AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not" in line
               for line in process.output)
    assert not any("AKIAPARTIAL00000" in line for line in process.output)
