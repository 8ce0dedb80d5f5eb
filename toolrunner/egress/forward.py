"""Inside a sandbox under ``allowlist``: serve the host's egress proxy on the container's own loopback.

The container has ``network_mode=none`` (only ``lo``); the host mounts one directory holding this session's
proxy socket. This forwarder listens on ``127.0.0.1:3128`` and copies each accepted connection to that
socket, so that ``HTTP(S)_PROXY=http://127.0.0.1:3128`` works for curl, pip, npm and urllib. It is not a
security boundary: tool code could talk to the socket itself, and the socket only ever reaches the proxy,
which knows the session from the socket it came in on.

Standard library only (it runs with the image's python3). Prototype: the runner does not start it yet
(docs/egress.md); run it as ``python3 forward.py [--listen 127.0.0.1:3128] [--socket PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac

SOCKET = "/run/openanalyst/egress/proxy.sock"
LISTEN = "127.0.0.1:3128"
#: The container variable carrying the tenant container's egress key (hex). The runner strips OPENANALYST_*
#: variables from the tools' environment, and /proc/<runner or tini>/environ is not readable by session uids.
KEY_VARIABLE = "OPENANALYST_EGRESS_KEY"


def session_credential(key: bytes, session: str) -> str:
    """The proxy credential of ``session``: ``<session>.<HMAC-SHA256(key, session), 128 bits, base64url>``.
    The runner puts it in the session's HTTP(S)_PROXY; the host recomputes it (toolrunner/egress/credentials.py)."""
    mac = hmac.new(key, session.encode(), hashlib.sha256).digest()[:16]
    return f"{session}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def session_proxy_env(key: bytes, session: str, listen: str = LISTEN) -> dict[str, str]:
    """What a session's base environment gets: every spelling of the proxy variables, nothing exempted."""
    url = f"http://{session_credential(key, session)}:x@{listen}"
    return {"HTTP_PROXY": url, "HTTPS_PROXY": url, "http_proxy": url, "https_proxy": url,
            "NO_PROXY": "", "no_proxy": ""}


async def _copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(256 * 1024):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except (ConnectionError, OSError):
        dst.close()


async def _serve_one(path: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        up_reader, up_writer = await asyncio.open_unix_connection(path, limit=256 * 1024)
    except OSError:
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        writer.close()
        return
    try:
        await asyncio.gather(_copy(reader, up_writer), _copy(up_reader, writer))
    finally:
        for w in (up_writer, writer):
            with contextlib.suppress(OSError):
                w.close()


async def serve(path: str, host: str, port: int, ready: asyncio.Event | None = None) -> None:
    server = await asyncio.start_server(lambda r, w: _serve_one(path, r, w), host, port, limit=256 * 1024)
    if ready is not None:
        ready.set()
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="forward 127.0.0.1:3128 to the egress proxy's socket")
    parser.add_argument("--listen", default=LISTEN)
    parser.add_argument("--socket", default=SOCKET)
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    asyncio.run(serve(args.socket, host, int(port)))


if __name__ == "__main__":
    main()
