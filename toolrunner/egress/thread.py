"""Run an ``EgressProxy`` on its own event loop in a background thread, for synchronous callers.

The sandbox manager is synchronous (docker-py), and so are tests that drive ``curl`` and ``urllib``: they
add and remove listeners through this object, which runs each operation on the proxy's loop and waits for it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from toolrunner.egress.proxy import EgressProxy, Identity

T = TypeVar("T")


class ProxyThread:
    """``start()`` the loop, ``listen_tcp``/``listen_unix`` per identity, ``close(listener)``, ``stop()``."""

    def __init__(self, proxy: EgressProxy) -> None:
        self.proxy = proxy
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="egress-proxy", daemon=True)
        self._servers: list[asyncio.Server] = []

    def start(self) -> ProxyThread:
        self._thread.start()
        return self

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def listen_tcp(self, identity: Identity, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        server = self._run(self.proxy.serve_tcp(identity, host, port))
        self._servers.append(server)
        sockname = server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    def listen_unix(self, identity: Identity, path: str) -> str:
        self.serve_unix(identity, path)
        return path

    def serve_unix(self, identity: Identity, path: str) -> asyncio.Server:
        server = self._run(self.proxy.serve_unix(identity, path))
        self._servers.append(server)
        return server

    def close_server(self, server: asyncio.Server) -> None:
        """Stop one listener (new connections refused; open ones finish under their own limits)."""
        async def close() -> None:
            server.close()
        self._run(close())
        if server in self._servers:
            self._servers.remove(server)

    def stop(self) -> None:
        """Close every listener, cancel the open connections and wait (5 s at most) for them to close their
        sockets: a loop closed under a pending connection leaves it half torn down."""
        async def close_all() -> None:
            for server in self._servers:
                server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            if tasks:  # let each connection's finally close its sockets while the loop still runs
                await asyncio.wait(tasks, timeout=5)
        if self._thread.is_alive():
            self._run(close_all())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()
