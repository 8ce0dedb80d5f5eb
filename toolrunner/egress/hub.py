"""The sandbox manager's side of the egress proxy: one socket per tenant container, in a directory of its own.

``EgressHub.ensure(tenant)`` makes ``<root>/<hash of tenant>/proxy.sock`` served with that tenant's identity
and returns the directory, which the container mounts read-only at ``CONTAINER_DIR``; ``release(tenant)``
closes the listener and removes the directory. The root must not be inside the server's data directory (the
data directory is never mounted) and is made ``0711`` so that no one can list the tenants in it. Directory
names are a hash of the tenant id: ids may be long (a socket path has a 108-byte limit) or contain characters
no path should.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import threading
from pathlib import Path
from typing import Protocol

from toolrunner.egress.proxy import EgressProxy, Identity
from toolrunner.egress.thread import ProxyThread

CONTAINER_DIR = "/run/openanalyst/egress"
SOCKET_NAME = "proxy.sock"
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with the terminating NUL


class EgressPlumbing(Protocol):
    """What the sandbox manager needs for an allowlist tenant's new container: the socket directory to mount
    and a fresh key (hex) for its calls' proxy credentials; and to hear that a session was closed (its calls'
    credentials then name nothing)."""

    def prepare(self, tenant: str) -> tuple[Path, str]: ...

    def session_closed(self, tenant: str, session: str) -> None: ...


class EgressHub:
    """Per-tenant listeners of one proxy, run on its own thread."""

    def __init__(self, proxy: EgressProxy, root: Path) -> None:
        longest = len(os.fsencode(root)) + 1 + 24 + 1 + len(SOCKET_NAME)
        if longest > MAX_SOCKET_PATH:
            raise ValueError(f"egress socket directory {root} is too long: its sockets' paths would have {longest} "
                             f"bytes and a Unix socket's path may have {MAX_SOCKET_PATH}; choose a shorter one")
        self.root = root
        self._thread = ProxyThread(proxy)
        self._servers: dict[str, asyncio.Server] = {}
        self._lock = threading.Lock()
        self._started = False

    def _dir(self, tenant: str) -> Path:
        return self.root / hashlib.sha256(tenant.encode()).hexdigest()[:24]

    def ensure(self, tenant: str) -> Path:
        """The tenant's socket directory, listening (made on first use; idempotent)."""
        with self._lock:
            if not self._started:
                self.root.mkdir(parents=True, exist_ok=True)
                self.root.chmod(0o711)
                self._thread.start()
                self._started = True
            directory = self._dir(tenant)
            if tenant in self._servers:
                return directory
            shutil.rmtree(directory, ignore_errors=True)  # a socket left by a crashed server
            directory.mkdir(mode=0o755)
            path = directory / SOCKET_NAME
            self._servers[tenant] = self._thread.serve_unix(Identity(tenant), str(path))
            # The container's forwarder (its own uid) connects; only that container mounts the directory, the root
            # is 0711, and without a credential of this tenant a connection gets a 407.
            os.chmod(path, 0o666)  # noqa: S103
            return directory

    def release(self, tenant: str) -> None:
        """Stop serving the tenant and remove its directory (its container is gone)."""
        with self._lock:
            server = self._servers.pop(tenant, None)
            if server is not None:
                self._thread.close_server(server)
            shutil.rmtree(self._dir(tenant), ignore_errors=True)

    def tenants(self) -> list[str]:
        with self._lock:
            return sorted(self._servers)

    def stop(self) -> None:
        with self._lock:
            for tenant in list(self._servers):
                shutil.rmtree(self._dir(tenant), ignore_errors=True)
            self._servers.clear()
            if self._started:
                self._thread.stop()
