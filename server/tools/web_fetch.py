"""``web_fetch {url, max_bytes?}``: a page fetched under the caller's egress policy, returned as readable text.

Every connection goes through the tenant's egress proxy (toolrunner/egress), the same one its sandbox uses:
httpcore's network backend opens the tenant's proxy socket and sends ``CONNECT host:port`` with a credential
issued for this call, so the rules, the address checks, the limits and the connection records are the
sandbox's own, and TLS is verified end to end by this client. Redirects are followed here, one hop at a time,
so each hop's host is checked again by the proxy; schemes other than http and https are refused; the body is
read up to ``max_bytes`` and the whole call is bounded in time. HTML becomes text with its links kept, JSON
and plain text come back as they are, anything else is refused naming its content type.

Not registered in the tool registry yet: the wiring gives ``web_fetch_tool`` a ``route_for`` that knows the
tenant's socket and issues the call's credential (docs/egress.md).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx
from pydantic import Field

from policies.model import Policy
from server.tools.context import ToolContext
from server.tools.html_text import html_to_text
from server.tools.registry import Probe, ToolDef
from server.tools.specs import ToolInput
from toolrunner.results import ToolError, ToolResult

DEFAULT_MAX_BYTES = 1_000_000
MAX_BYTES_CAP = 10_000_000
MAX_REDIRECTS = 5
TIMEOUT_S = 30.0
_REDIRECTS = {301, 302, 303, 307, 308}
_ACCEPT = "text/html, application/json;q=0.9, text/plain;q=0.8, */*;q=0.1"


class WebFetchInput(ToolInput):
    url: str = Field(min_length=1, max_length=8192, description="An http:// or https:// URL.")
    max_bytes: int | None = Field(default=None, ge=1, le=MAX_BYTES_CAP,
                                  description=f"Most bytes of the body to read (default {DEFAULT_MAX_BYTES}).")


@dataclass(frozen=True)
class EgressRoute:
    """Where this call's connections go: the tenant's proxy socket, and the credential issued for the call;
    ``release`` is called once the fetch is over (the credential is then revoked)."""

    socket_path: str
    credential: str
    release: Callable[[], None] | None = None


#: The tenant's route for this call, or None when its policy gives it no network (mode none).
RouteFor = Callable[[ToolContext], Awaitable[EgressRoute | None]]


class ProxyRefused(httpcore.ConnectError):
    """The egress proxy answered the CONNECT with a refusal; the message is the proxy's reason."""


class ProxyConnectBackend(httpcore.AsyncNetworkBackend):
    """Every TCP connection is a CONNECT tunnel through the tenant's proxy socket; nothing else is reachable."""

    def __init__(self, route: EgressRoute, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._route = route
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109 httpcore's
                          local_address: str | None = None, socket_options: Any = None,
                          ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(self._route.socket_path, timeout=timeout)
        auth = base64.b64encode(f"{self._route.credential}:x".encode()).decode()
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        await stream.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
                           f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode(), timeout=timeout)
        reply = b""
        while b"\r\n\r\n" not in reply and len(reply) < 65536:
            chunk = await stream.read(65536, timeout=timeout)
            if not chunk:
                break
            reply += chunk
        status = reply.split(b"\r\n", 1)[0].split(b" ", 2)
        if len(status) < 2 or status[1] != b"200":
            await stream.aclose()
            reason = reply.partition(b"\r\n\r\n")[2].decode("utf-8", "replace").strip()
            raise ProxyRefused(reason or f"egress proxy answered {b' '.join(status[1:]).decode('latin-1')}")
        return stream

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109 httpcore's
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("web_fetch reaches only http and https URLs")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _Transport(httpx.AsyncHTTPTransport):
    def __init__(self, route: EgressRoute, verify: ssl.SSLContext | None) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=verify or httpx.create_ssl_context(trust_env=False), max_connections=4,
            network_backend=ProxyConnectBackend(route))


class FetchError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Page:
    url: str
    status: int
    content_type: str
    text: str
    cut: bool
    hops: list[str]


def _kind(content_type: str) -> str | None:
    media = content_type.split(";")[0].strip().lower()
    if media in ("text/html", "application/xhtml+xml"):
        return "html"
    if media == "application/json" or media.endswith("+json"):
        return "json"
    if media.startswith("text/") or media in ("application/xml", "application/javascript") or not media:
        return "text"
    return None


async def fetch(client: httpx.AsyncClient, url: str, max_bytes: int) -> Page:
    """GET ``url``, following up to MAX_REDIRECTS redirects one hop at a time (each hop re-checked by the
    proxy); the body is read up to ``max_bytes``."""
    hops: list[str] = []
    for _ in range(MAX_REDIRECTS + 1):
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise FetchError("INVALID_INPUT", f"only http and https URLs are fetched, not {scheme or 'no'} scheme"
                             + (f" (redirected from {hops[-1]})" if hops else ""))
        try:
            async with client.stream("GET", url, headers={"Accept": _ACCEPT}) as resp:
                location = resp.headers.get("location")
                if resp.status_code in _REDIRECTS and location:
                    hops.append(url)
                    url = urljoin(url, location)
                    continue
                content_type = resp.headers.get("content-type", "")
                kind = _kind(content_type)
                if kind is None:
                    raise FetchError("WEB_FETCH_BINARY", f"{url} is {content_type.split(';')[0]}, not text")
                body = bytearray()
                async for chunk in resp.aiter_raw():
                    body += chunk
                    if len(body) > max_bytes:
                        break
                cut = len(body) > max_bytes
                raw = bytes(body[:max_bytes]).decode(resp.charset_encoding or "utf-8", "replace")
                text = html_to_text(raw, url) if kind == "html" else raw
                return Page(url, resp.status_code, content_type, text, cut, hops)
        except httpx.ConnectError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ProxyRefused) or "egress" in str(exc):
                raise FetchError("WEB_FETCH_DENIED", str(exc)) from exc
            raise FetchError("WEB_FETCH_FAILED", f"cannot connect for {url}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise FetchError("WEB_FETCH_FAILED", f"{url}: {exc.__class__.__name__}: {exc}") from exc
    raise FetchError("WEB_FETCH_FAILED", f"more than {MAX_REDIRECTS} redirects (last: {url})")


def _result(output: str, started: float, *, error: ToolError | None = None, cut: bool = False,
            timed_out: bool = False) -> ToolResult:
    return ToolResult(tool_name="web_fetch", output=output, exit_code=1 if error else 0,
                      duration_ms=round((time.perf_counter() - started) * 1000, 3), truncated=cut,
                      timed_out=timed_out, limit="timeout" if timed_out else ("output" if cut else None),
                      error=error)


def web_fetch_handler(route_for: RouteFor, timeout_s: float = TIMEOUT_S, verify: ssl.SSLContext | None = None
                      ) -> Callable[[ToolContext, dict[str, Any]], Awaitable[ToolResult]]:
    """The tool's handler; ``verify`` replaces the system's CAs (tests trust their own CA)."""
    async def web_fetch(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        started = time.perf_counter()
        try:
            route = await route_for(ctx)
        except OSError as exc:
            return _result("", started, error=ToolError.host(
                "EGRESS_UNAVAILABLE", f"the egress proxy could not serve this tenant: {exc.strerror or exc}"))
        if route is None:
            return _result("", started, error=ToolError.host(
                "EGRESS_NOT_ALLOWED", "this tenant's policy gives it no network (network = \"none\"); an owner "
                "can allow names with network = \"allowlist\" and the 'web' preset"))
        max_bytes = int(args.get("max_bytes") or DEFAULT_MAX_BYTES)
        try:
            async with httpx.AsyncClient(transport=_Transport(route, verify), trust_env=False,
                                         follow_redirects=False, timeout=httpx.Timeout(timeout_s)) as client:
                async with asyncio.timeout(timeout_s):
                    page = await fetch(client, str(args["url"]), max_bytes)
        except TimeoutError:
            return _result("", started, timed_out=True, error=ToolError.host(
                "TIMEOUT", f"web_fetch took longer than {timeout_s:.0f} s"))
        except FetchError as exc:
            return _result("", started, error=ToolError.host(exc.code, str(exc)))
        finally:
            if route.release is not None:
                route.release()
        head = [f"URL: {page.url}", f"Status: {page.status}", f"Content-Type: {page.content_type or '(none)'}"]
        if page.hops:
            head.append("Redirected from: " + " -> ".join(page.hops))
        tail = f"\n\n[cut: only the first {max_bytes} bytes of the body were read]" if page.cut else ""
        return _result("\n".join(head) + "\n\n" + page.text + tail, started, cut=page.cut)
    return web_fetch


def web_fetch_tool(route_for: RouteFor) -> ToolDef:
    return ToolDef("web_fetch", "Fetch a web page under this tenant's network policy and return it as text "
                   "(HTML reduced to text with links; JSON and plain text as is).", WebFetchInput, "server",
                   web_fetch_handler(route_for))


def network_probe(policy_for: Callable[[str], Policy]) -> Probe:
    """web_fetch goes out only through the tenant's egress proxy, which exists under network = "allowlist":
    under any other mode every call is refused, so the tool is not offered (``route_for`` decides the same)."""

    def probe(tenant_id: str) -> str | None:
        mode = policy_for(tenant_id).network
        return None if mode == "allowlist" else (
            f"this tenant's policy has network = {mode!r}; web_fetch goes out only through the egress proxy of "
            "network = \"allowlist\"")

    return probe
