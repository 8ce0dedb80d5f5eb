"""The HTTP client for tenant-supplied provider URLs: every new connection resolves the host itself, checks
every address (``urlguard.resolve_checked``) and connects to a checked address.

The check sits in httpcore's network backend, below the connection pool: the pool is keyed by the URL's
origin, so the request line, the Host header, TLS SNI and certificate verification all still use the host
name — only the TCP connect goes to the checked IP. No environment proxy (a proxy would resolve the name
itself) and no redirects are followed.
"""

from __future__ import annotations

import ssl
from typing import Any

import anyio
import httpcore
import httpx

from server.providers.addresses import UrlPolicy
from server.providers.urlguard import Resolver, resolve_checked, system_resolver


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """A network backend that connects only to addresses the policy allows (and never to a unix socket)."""

    def __init__(self, policy: UrlPolicy, resolver: Resolver = system_resolver,
                 inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109 httpcore's
                          local_address: str | None = None, socket_options: Any = None,
                          ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await resolve_checked(host, port, self._policy, self._resolver)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                     socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None  # resolve_checked never returns an empty list
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109 httpcore's
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not allowed for tenant provider URLs")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (request/response mapping, error mapping) over a pool with the guarded backend."""

    def __init__(self, policy: UrlPolicy, *, limits: httpx.Limits, verify: ssl.SSLContext | bool = True,
                 resolver: Resolver = system_resolver) -> None:
        context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify, trust_env=False)
        super().__init__(verify=context, trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy, resolver))


def guarded_client(policy: UrlPolicy, *, max_connections: int = 200, verify: ssl.SSLContext | bool = True,
                   resolver: Resolver = system_resolver) -> httpx.AsyncClient:
    """The client the router uses for tenant-supplied credentials (adapters set per-request timeouts)."""
    transport = GuardedTransport(policy, limits=httpx.Limits(max_connections=max_connections),
                                 verify=verify, resolver=resolver)
    return httpx.AsyncClient(transport=transport, trust_env=False, follow_redirects=False,
                             timeout=httpx.Timeout(120.0, connect=10.0))
