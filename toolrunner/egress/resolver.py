"""Name resolution for the proxy: the system resolver, and a fixed table for tests.

The proxy resolves each name exactly once and connects to an address it checked, so a name that answers
differently the second time (DNS rebinding) cannot move the connection after the check.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping, Sequence
from typing import Protocol

from toolrunner.egress.addresses import IPAddress


class ResolveError(Exception):
    """The name has no address."""


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address ``host`` has, or ResolveError."""


class SystemResolver:
    """``getaddrinfo`` in the loop's executor (what the host itself would use)."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise ResolveError(str(exc)) from exc
        out: list[IPAddress] = []
        for info in infos:
            ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if ip not in out:
                out.append(ip)
        if not out:
            raise ResolveError(f"{host} has no address")
        return out


class StaticResolver:
    """A fixed name → addresses table: the test double (names unknown to it do not resolve)."""

    def __init__(self, table: Mapping[str, Sequence[str]]) -> None:
        self._table = {name.lower(): [ipaddress.ip_address(a) for a in addrs] for name, addrs in table.items()}

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        found = self._table.get(host.lower())
        if not found:
            raise ResolveError(f"{host} has no address")
        return list(found)
