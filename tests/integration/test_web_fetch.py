"""web_fetch through the tenant's egress proxy, against local fake sites on loopback: text out of HTML with its
links, JSON as is, redirects re-checked at each hop (a redirect to a denied host is refused), an oversized
page cut and saying so, binary and non-http refused, and every connection recorded against the call."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from fakes.origin import wait_records
from fakes.tls import make_tls

from policies.network import EgressRules
from server.tools.context import ToolContext
from server.tools.web_fetch import EgressRoute, web_fetch_handler
from toolrunner.egress import AddressPolicy, CredentialRegistry, EgressHub, EgressProxy, MemorySink, StaticResolver
from toolrunner.results import ToolResult

IP = "127.0.0.2"
PAGE = ("<html><head><title>Fake  docs</title><script>steal()</script></head><body><h1>Install</h1>"
        "<p>Run <code>pip install x</code>, see <a href='/json'>the API</a>.</p></body></html>")


class Site(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return

    def _send(self, status: int, ctype: str, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/page":
            self._send(200, "text/html; charset=utf-8", PAGE.encode())
        elif url.path == "/json":
            self._send(200, "application/json", b'{"version": "1.2.3"}')
        elif url.path == "/bin":
            self._send(200, "image/png", b"\x89PNG\r\n\x1a\n" + bytes(100))
        elif url.path == "/big":
            self._send(200, "text/plain", b"y" * 3_000_000)
        elif url.path == "/redirect":
            self._send(302, "text/plain", b"", {"Location": parse_qs(url.query)["to"][0]})
        elif url.path == "/hold":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"x")
            self.wfile.flush()
            self.rfile.read(1)  # until the client goes
        else:
            self._send(404, "text/plain", b"no")


@dataclass
class Env:
    hub: EgressHub
    registry: CredentialRegistry
    sink: MemorySink
    port: int
    tls_port: int
    client_ctx: ssl.SSLContext
    allowed: set[str]

    def records(self, n: int) -> list[tuple[str, str]]:
        """(host, decision) of the proxy's records once there are ``n`` (they land when the proxy closes)."""
        return [(r.host, r.decision) for r in wait_records(self.sink, n)]

    def run(self, args: dict[str, object], tenant: str = "t1", timeout_s: float = 20) -> ToolResult:
        async def route_for(ctx: ToolContext) -> EgressRoute | None:
            if ctx.tenant_id not in self.allowed:
                return None
            token = self.registry.issue(ctx.tenant_id, ctx.session_id or "", ctx.call_id)
            return EgressRoute(str(self.hub.ensure(ctx.tenant_id) / "proxy.sock"), token)
        handler = web_fetch_handler(route_for, timeout_s=timeout_s, verify=self.client_ctx)
        return asyncio.run(handler(ToolContext(tenant_id=tenant, session_id="s1", call_id="call-1"), args))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    tls = make_tls("docs.test")
    plain = ThreadingHTTPServer((IP, 0), Site)
    secure = ThreadingHTTPServer((IP, 0), Site)
    secure.socket = tls.server.wrap_socket(secure.socket, server_side=True)
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
               for s in (plain, secure)]
    for t in threads:
        t.start()
    sink, registry = MemorySink(), CredentialRegistry()
    proxy = EgressProxy(lambda _t: EgressRules(allow=("docs.test", "*.docs.test"), deny=("evil.docs.test",)),
                        sink, addresses=AddressPolicy.from_strings([f"{IP}/32"]),
                        resolver=StaticResolver({"docs.test": [IP], "evil.docs.test": [IP],
                                                 "other.test": [IP], "local.docs.test": ["127.0.0.1"]}),
                        attribute=registry.attribute)
    hub = EgressHub(proxy, tmp_path / "egress")
    yield Env(hub, registry, sink, plain.server_address[1], secure.server_address[1], tls.client, {"t1"})
    hub.stop()
    for s, t in zip((plain, secure), threads, strict=True):
        s.shutdown()
        s.server_close()
        t.join(5)


def test_html_becomes_text_with_links_and_the_connection_is_recorded(env: Env) -> None:
    """An HTML page comes back as text (title, no script, the link absolute), and the proxy recorded the
    connection against the call that made it."""
    result = env.run({"url": f"http://docs.test:{env.port}/page"})
    assert result.error is None and not result.truncated, result
    assert "# Fake docs" in result.output and "Install" in result.output and "steal" not in result.output
    assert f"the API (http://docs.test:{env.port}/json)" in result.output
    assert env.records(1) == [("docs.test", "allow")]
    (rec,) = env.sink.records
    assert (rec.tenant, rec.session, rec.call_id, rec.decision) == ("t1", "s1", "call-1", "allow")


def test_json_over_https_as_is(env: Env) -> None:
    """JSON over HTTPS (TLS through the proxy's tunnel, verified by the client) is returned unchanged."""
    result = env.run({"url": f"https://docs.test:{env.tls_port}/json"})
    assert result.error is None, result
    assert result.output.endswith('{"version": "1.2.3"}') and "Content-Type: application/json" in result.output


def test_a_redirect_to_a_denied_host_is_refused(env: Env) -> None:
    """The first hop is allowed, the redirect's host is denied by a rule: the call fails naming the rule, and
    both hops have their records."""
    target = f"http://evil.docs.test:{env.port}/json"
    result = env.run({"url": f"http://docs.test:{env.port}/redirect?to={target}"})
    assert result.error is not None and result.error.code == "WEB_FETCH_DENIED", result
    assert "deny:evil.docs.test" in result.error.message
    assert sorted(env.records(2)) == [("docs.test", "allow"), ("evil.docs.test", "deny")]


def test_redirects_to_private_addresses_and_other_schemes_are_refused(env: Env) -> None:
    """A redirect to an allowed name that resolves to the host's loopback is refused by the address rule, and
    one to a non-http scheme is refused before any connection."""
    local = env.run({"url": f"http://docs.test:{env.port}/redirect?to=http://local.docs.test:{env.port}/"})
    assert local.error is not None and local.error.code == "WEB_FETCH_DENIED"
    assert "loopback address" in local.error.message
    ftp = env.run({"url": f"http://docs.test:{env.port}/redirect?to=ftp://docs.test/file"})
    assert ftp.error is not None and ftp.error.code == "INVALID_INPUT" and "redirected from" in ftp.error.message
    direct = env.run({"url": "file:///etc/passwd"})
    assert direct.error is not None and direct.error.code == "INVALID_INPUT"


def test_an_allowed_redirect_is_followed(env: Env) -> None:
    """A redirect within the allow-list is followed and the output says where it came from."""
    result = env.run({"url": f"http://docs.test:{env.port}/redirect?to=/json"})
    assert result.error is None and '"1.2.3"' in result.output
    assert f"Redirected from: http://docs.test:{env.port}/redirect" in result.output


def test_an_oversized_page_is_cut_and_says_so(env: Env) -> None:
    """A 3 MB page with max_bytes 1000 returns 1000 bytes, marked truncated with the output limit."""
    result = env.run({"url": f"http://docs.test:{env.port}/big", "max_bytes": 1000})
    assert result.truncated and result.limit == "output" and result.error is None
    assert "y" * 1000 in result.output and "y" * 1001 not in result.output
    assert result.output.endswith("[cut: only the first 1000 bytes of the body were read]")


def test_binary_is_refused_with_its_content_type(env: Env) -> None:
    """An image is not returned: the error names its content type."""
    result = env.run({"url": f"http://docs.test:{env.port}/bin"})
    assert result.error is not None and result.error.code == "WEB_FETCH_BINARY"
    assert "image/png" in result.error.message and result.output == ""


def test_a_tenant_without_network_gets_a_clear_error(env: Env) -> None:
    """A tenant whose policy is network none is told so, and nothing reaches the proxy."""
    result = env.run({"url": f"http://docs.test:{env.port}/page"}, tenant="t2")
    assert result.error is not None and result.error.code == "EGRESS_NOT_ALLOWED" and env.sink.records == []


def test_a_slow_page_times_out(env: Env) -> None:
    """A server that never finishes its body is cut off at the call's time limit."""
    result = env.run({"url": f"http://docs.test:{env.port}/hold"}, timeout_s=1)
    assert result.timed_out and result.limit == "timeout" and result.error is not None
    assert json.loads(result.model_dump_json())["error"]["code"] == "TIMEOUT"
