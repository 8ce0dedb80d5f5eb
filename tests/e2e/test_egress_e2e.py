"""The allowlist mode through the server as a real process: a tenant whose policy allows `localhost` runs curl
in its sandbox and reaches a fake site on the host's 127.0.0.1 (the owner's private-target exception) through
the server's egress proxy; a name it does not allow gets the proxy's 403; with the proxy variables unset
nothing connects; GET /v1/sandbox shows the allow-list; a tenant under the default policy has no proxy."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.origin import serving

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(180)]

POLICY = """
cpus = 0.5
memory_mb = 256
pids = 128
tmpfs_mb = 16
nofile = 256
fsize_mb = 16
default_timeout_s = 20
max_timeout_s = 60
output_cap_bytes = 65536
max_concurrent_calls = 2
network = "allowlist"

[egress]
allow = ["localhost"]
"""
ADA = {"X-Tenant-ID": "ada"}
BOB = {"X-Tenant-ID": "bob"}


class Hello(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        body = f"hello from the host, {self.headers.get('Host')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def site() -> Iterator[int]:
    with serving(Hello) as port:
        yield port


@pytest.fixture
def server(serve: Callable[..., Any], sandbox_image: str, tmp_path: Path) -> Iterator[Any]:
    policy = tmp_path / "ada.toml"
    policy.write_text(POLICY)
    started = serve(env={"OPENANALYST_TENANT_POLICIES": json.dumps({"ada": str(policy)}),
                         "OPENANALYST_EGRESS_PRIVATE_NETWORKS": "127.0.0.1/32,::1/128"})
    yield started
    if started.proc.poll() is None:
        assert started.stop() == 0


def _bash(server: Any, headers: dict[str, str], command: str) -> str:
    response = httpx.post(f"{server.base}/v1/tools/bash", headers=headers, timeout=90,
                          json={"input": {"command": command}})
    assert response.status_code == 200, response.text
    output: str = response.json()["output"]
    return output


def test_an_allowlist_tenant_reaches_only_its_names(server: Any, site: int) -> None:
    """curl in ada's sandbox reaches localhost on the host through the proxy, a name off the list is 403, and
    without the proxy variables nothing connects; bob (default policy) has no proxy and no network."""
    assert _bash(server, ADA, f"curl -sS --max-time 15 http://localhost:{site}/") == (
        f"hello from the host, localhost:{site}")
    assert _bash(server, ADA, f"curl -s -o /dev/null -w '%{{http_code}}' http://example.com:{site}/") == "403"
    direct = _bash(server, ADA, f"env -u http_proxy -u HTTP_PROXY curl -sS --max-time 5 http://127.0.0.1:{site}/;"
                                " echo rc=$?")
    assert "hello" not in direct and "rc=0" not in direct
    info = httpx.get(f"{server.base}/v1/sandbox", headers=ADA, timeout=30).json()
    assert info["limits"]["network"] == "allowlist" and info["egress"]["allow"] == ["localhost"]
    bob = _bash(server, BOB, f"echo \"[${{HTTP_PROXY:-}}]\"; curl -sS --max-time 5 http://localhost:{site}/;"
                             " echo rc=$?")
    assert bob.startswith("[]") and "hello" not in bob and "rc=0" not in bob
