"""The server process's log as an operator reads it: JSON lines, the server's own INFO lines, uvicorn's
lines in the same format, the request id on what a request logs, and no secret anywhere."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_support import TEST_KEY, server_env
from fakes.anthropic import FakeAnthropic
from fakes.reply import Reply

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
BEARER = "oak_a1b2c3d4e5f6_BEARERSECRETvalue0123456789"
TENANT_KEY = "sk-ant-api03-TENANTSECRET-0123456789abcdef"


@pytest.fixture
def anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


def test_json_lines_request_ids_and_no_secrets(serve: Callable[..., Any], anthropic: FakeAnthropic,
                                               tmp_path: Path) -> None:
    """Every line is one JSON object; the start line and uvicorn's lines are among them at INFO; a warning
    logged while serving a request carries that request's X-Request-ID; the environment's provider key, a
    key sent in a request body and a bearer token never appear."""
    (tmp_path / "ws").mkdir()
    env = server_env(anthropic.base_url, tmp_path / "ws", OPENANALYST_LOG_FORMAT="json",
                     OPENANALYST_LOG_LEVEL="info", OPENANALYST_PROVIDER_MAX_RETRIES="0")
    server = serve(env=env)
    auth = {"Authorization": f"Bearer {BEARER}"}
    put = httpx.put(server.base + "/me/providers/anthropic", headers=auth, timeout=30,
                    json={"api_key": TENANT_KEY, "base_url": anthropic.base_url})
    assert put.status_code == 200
    anthropic.script([Reply.http_error(500, "server")] * 3)
    body = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}
    for n in range(3):  # the third consecutive failure opens the circuit, which the router logs as a warning
        answer = httpx.post(server.base + "/v1/chat/completions", json=body, timeout=30,
                            headers={**auth, "X-Request-ID": f"trace-{n}"})
        assert answer.status_code == 502 and answer.headers["x-request-id"] == f"trace-{n}"
    assert server.stop() == 0

    lines = [json.loads(line) for line in server.output if line.strip()]  # raises on any non-JSON line
    assert all({"ts", "level", "logger", "message", "request_id"} <= set(obj) for obj in lines)
    assert any(o["logger"] == "server.startup" and o["level"] == "INFO" and "listening on" in o["message"]
               for o in lines)
    assert any(o["logger"] == "uvicorn.error" and "Application startup complete" in o["message"] for o in lines)
    access = [o for o in lines if o["logger"] == "uvicorn.access"]
    assert [o["request_id"] for o in access if "/v1/chat/completions" in o["message"]] == \
        ["trace-0", "trace-1", "trace-2"]
    [opened] = [o for o in lines if "circuit" in o["message"]]
    assert opened["level"] == "WARNING" and opened["request_id"] == "trace-2"
    text = "\n".join(server.output)
    for secret in (TEST_KEY, TENANT_KEY, BEARER, "BEARERSECRET", "TENANTSECRET"):
        assert secret not in text
