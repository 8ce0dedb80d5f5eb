"""web_fetch and web_search through the server as a real process: listed in GET /v1/tools, called by the direct
tool API, run under the tenant's egress policy (a local fake site on 127.0.0.1, reached through the server's
egress proxy with the owner's private-target exception), and audited like every tool."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.origin import serving

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

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
WENDY = {"X-Tenant-ID": "wendy"}  # allowlist: localhost only
CAROL = {"X-Tenant-ID": "carol"}  # the default policy: no network


class Site(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        if self.path.startswith("/away"):
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}/page")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"<html><head><title>Local docs</title></head><body><p>See <a href='/next'>next</a></p></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def site() -> Iterator[int]:
    with serving(Site) as port:
        yield port


@pytest.fixture
def server(serve: Callable[..., Any], tmp_path: Path) -> Iterator[Any]:
    policy = tmp_path / "wendy.toml"
    policy.write_text(POLICY)
    started = serve(env={"OPENANALYST_TENANT_POLICIES": json.dumps({"wendy": str(policy)}),
                         "OPENANALYST_EGRESS_PRIVATE_NETWORKS": "127.0.0.1/32,::1/128"})
    yield started
    if started.proc.poll() is None:
        assert started.stop() == 0


def _call(server: Any, tool: str, headers: dict[str, str], **args: Any) -> dict[str, Any]:
    response = httpx.post(f"{server.base}/v1/tools/{tool}", headers=headers, json={"input": args}, timeout=60)
    assert response.status_code == 200, response.text + "\n" + "\n".join(server.output[-40:])
    result: dict[str, Any] = response.json()
    return result


def test_web_tools_are_listed_and_obey_the_tenant_policy(server: Any, site: int) -> None:
    """Both tools are listed; an allowlist tenant reads an allowed page as text; a redirect to an IP literal is
    refused by the proxy; a tenant without network is told so; search without a backend says so; every call
    has its audit records."""
    tools = {t["name"] for t in httpx.get(f"{server.base}/v1/tools", headers=WENDY, timeout=30).json()["data"]}
    assert {"web_fetch", "web_search"} <= tools
    page = _call(server, "web_fetch", WENDY, url=f"http://localhost:{site}/page")
    assert page["error"] is None, page
    assert "# Local docs" in page["output"] and f"next (http://localhost:{site}/next)" in page["output"]
    away = _call(server, "web_fetch", WENDY, url=f"http://localhost:{site}/away")
    assert away["error"]["code"] == "WEB_FETCH_DENIED" and "IP address" in away["error"]["message"]
    none = _call(server, "web_fetch", CAROL, url=f"http://localhost:{site}/page")
    assert none["error"]["code"] == "EGRESS_NOT_ALLOWED"
    search = _call(server, "web_search", WENDY, query="anything")
    assert search["error"]["code"] == "WEB_SEARCH_NOT_CONFIGURED"
    audit = httpx.get(f"{server.base}/v1/audit", headers=WENDY, params={"phase": "finished"}, timeout=30).json()
    codes = sorted((r["tool"], r["error_code"] or "") for r in audit["data"])
    assert codes == [("web_fetch", ""), ("web_fetch", "WEB_FETCH_DENIED"),
                     ("web_search", "WEB_SEARCH_NOT_CONFIGURED")], audit["data"]
