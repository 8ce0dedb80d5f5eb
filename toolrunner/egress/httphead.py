"""The one HTTP request head the proxy reads from a client: ``CONNECT host:port`` or an absolute ``http://`` URL.

Only the head is parsed; everything after it is forwarded as bytes. A plain-HTTP request goes upstream with its
target in origin form, without the ``Proxy-*`` headers (the proxy credential never leaves the host) and with
``Connection: close`` and a ``Host`` taken from the checked URL, so one client connection carries one request
to one checked host.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024
_HOP = {b"proxy-authorization", b"proxy-connection", b"connection", b"keep-alive", b"host"}


class BadRequest(Exception):
    """A head the proxy will not forward; the message goes back to the client."""


@dataclass(frozen=True)
class ProxyRequest:
    method: str
    host: str
    port: int
    credential: str | None
    upstream_head: bytes  # empty for CONNECT


def _split_host_port(text: str, default: int | None) -> tuple[str, int]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if not port_text:
        if default is None:
            raise BadRequest("CONNECT needs host:port")
        return host, default
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise BadRequest(f"bad port {port_text!r}")
    return host, int(port_text)


def _credential(value: bytes) -> str | None:
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        user = base64.b64decode(token.strip(), validate=True).split(b":", 1)[0]
        return user.decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        return None


def parse_head(head: bytes) -> ProxyRequest:
    """Parse a request head ending in CRLFCRLF; BadRequest for anything but CONNECT or an absolute http URL."""
    lines = head[:-4].split(b"\r\n")
    try:
        method_b, target_b, version = lines[0].split(b" ")
        method, target = method_b.decode("ascii"), target_b.decode("ascii")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("malformed request line") from exc
    if not version.startswith(b"HTTP/1."):
        raise BadRequest("only HTTP/1.x")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise BadRequest("malformed header line")
        headers.append((name, value.strip()))
    credential = next((_credential(v) for n, v in headers if n.lower() == b"proxy-authorization"), None)
    if method == "CONNECT":
        host, port = _split_host_port(target, None)
        return ProxyRequest(method, host, port, credential, b"")
    url = urlsplit(target)
    if url.scheme != "http" or not url.hostname:
        raise BadRequest("a proxy request needs an absolute http:// URL (use CONNECT for https)")
    try:
        port = url.port or 80
    except ValueError as exc:
        raise BadRequest("bad port") from exc
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    kept = [(n, v) for n, v in headers if n.lower() not in _HOP]
    kept.insert(0, (b"Host", url.netloc.rpartition("@")[2].encode("ascii")))  # the checked name, nothing else
    out = [f"{method} {path} ".encode("ascii") + version]
    out += [n + b": " + v for n, v in kept]
    out.append(b"Connection: close")
    return ProxyRequest(method, url.hostname, port, credential, b"\r\n".join(out) + b"\r\n\r\n")
