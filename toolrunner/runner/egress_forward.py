"""Inside a sandbox under ``allowlist``: serve the host's egress proxy on the container's own loopback.

The container has ``network_mode=none`` (only ``lo``); the host mounts one directory (read-only) holding the
tenant's proxy socket. The runner starts this forwarder on a thread of its own (``start_if_mounted``): it
listens on ``127.0.0.1:3128`` and copies each accepted connection to that socket, so that
``HTTP(S)_PROXY=http://127.0.0.1:3128`` works for curl, pip, npm and urllib. It is not a security boundary:
tool code could talk to the socket itself, and the socket only ever reaches the proxy, which knows the tenant
from the socket and the session and call from the credential in each call's proxy variables
(``egress_env.call_proxy_env``, derived from the container's key, docs/egress.md).

Standard library only (it runs with the image's python3); ``python3 egress_forward.py [--listen HOST:PORT]
[--socket PATH]`` runs it on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import threading
from collections.abc import Callable

from toolrunner.runner.egress_env import LISTEN, SOCKET


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


async def serve(path: str, host: str, port: int, on_listening: Callable[[], None] | None = None) -> None:
    """Forward every connection to ``host:port`` to the socket at ``path``; ``on_listening`` once bound."""
    server = await asyncio.start_server(lambda r, w: _serve_one(path, r, w), host, port, limit=256 * 1024)
    if on_listening is not None:
        on_listening()
    async with server:
        await server.serve_forever()


def start_if_mounted(socket_path: str = SOCKET, listen: str = LISTEN, wait_s: float = 5.0
                     ) -> threading.Thread | None:
    """When the host mounted a proxy socket, serve it on ``listen`` from a daemon thread; the thread once
    listening, None when there is no socket or the port cannot be bound (the runner logs it)."""
    if not os.path.exists(socket_path):
        return None
    host, _, port = listen.rpartition(":")
    ready = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(serve(socket_path, host, int(port), ready.set))
        except OSError as exc:
            failed.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="egress-forward", daemon=True)
    thread.start()
    ready.wait(wait_s)
    return None if failed or not ready.is_set() else thread


def main() -> None:
    parser = argparse.ArgumentParser(description="forward 127.0.0.1:3128 to the egress proxy's socket")
    parser.add_argument("--listen", default=LISTEN)
    parser.add_argument("--socket", default=SOCKET)
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    asyncio.run(serve(args.socket, host, int(port)))


if __name__ == "__main__":
    main()
