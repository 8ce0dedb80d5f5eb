"""The rule for tenant-supplied provider URLs, applied twice: when the URL is configured, and at every
connection (a public name may resolve to a private address later: DNS rebinding).

``check_base_url`` is the configuration-time check: http/https only, no userinfo, and every address the host
resolves to must be allowed (``PROVIDER_URL_FORBIDDEN``), or 422 ``PROVIDER_URL_UNRESOLVED`` if it does not
resolve. ``resolve_checked`` is what both checks share and what the guarded connection uses to pick the
address it connects to (``server.providers.guarded_http``).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import anyio
import httpx

from server.errors import Unprocessable
from server.providers.addresses import UrlPolicy, forbidden_reason, ip_literal, normalise_host

Resolver = Callable[[str, int], Awaitable[list[str]]]
RESOLVE_TIMEOUT_S = 5.0


class ProviderUrlForbidden(Unprocessable):
    """A tenant's provider URL is malformed for this rule or reaches an address the owner has not allowed."""

    def __init__(self, message: str) -> None:
        super().__init__("PROVIDER_URL_FORBIDDEN", message)


class ProviderUrlUnresolved(Unprocessable):
    def __init__(self, host: str, detail: str) -> None:
        super().__init__("PROVIDER_URL_UNRESOLVED", f"the provider URL's host {host[:255]!r} does not resolve"
                         f" ({detail}); check the name")


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for ``host``, in its order, without duplicates."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0]).split("%")[0]
        if address not in out:
            out.append(address)
    return out


HINT = ("tenants' provider URLs may only reach public addresses; the server's owner can allow more with "
        "OPENANALYST_PROVIDER_URL_ALLOWLIST (hosts, IPs or CIDRs) or OPENANALYST_ALLOW_PRIVATE_PROVIDER_URLS=1")


async def resolve_checked(host: str, port: int, policy: UrlPolicy, resolver: Resolver = system_resolver,
                          ) -> list[str]:
    """The addresses to connect to for ``host``: all of them checked, or ``ProviderUrlForbidden`` if any one
    is not allowed (a name with one private address among public ones is refused: the client could pick it).
    A resolver failure raises ``OSError`` (``socket.gaierror``)."""
    name = normalise_host(host)
    literal = ip_literal(name)
    if literal is not None:
        addresses = [str(literal)]
    else:
        addresses = await resolver(name, port)
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "no address")
    if policy.host_allowed(name):
        return addresses
    for address in addresses:
        ip = ip_literal(address)
        if ip is None:
            raise ProviderUrlForbidden(f"{name[:255]!r} resolved to {address[:64]!r}, which is not an IP address")
        if not policy.address_allowed(ip):
            # A name's address is not echoed: the tenant learns the kind, not the network's layout.
            what = ("is" if str(ip) == name else f"is {ip}, which is") if literal is not None \
                else "resolves to an address that is"
            raise ProviderUrlForbidden(f"the provider URL's host {name[:255]!r} {what} {forbidden_reason(ip)}; {HINT}")
    return addresses


def parse_base_url(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL without userinfo, or ``ProviderUrlForbidden`` saying what is wrong."""
    try:
        parsed = httpx.URL(url)
        host = parsed.host  # decodes IDNA: an invalid punycode label (xn--127-0.0.0.1) raises here
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise ProviderUrlForbidden(f"the provider URL is not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        raise ProviderUrlForbidden("the provider URL must use http or https")
    if parsed.userinfo:
        raise ProviderUrlForbidden("the provider URL must not carry a user name or password (userinfo); "
                                   "put the key in api_key")
    if not host:
        raise ProviderUrlForbidden("the provider URL has no host")
    return parsed.raw_host.decode("ascii"), parsed.port or (443 if parsed.scheme == "https" else 80)


def url_to_check(given: str | None, default: str) -> str | None:
    """The URL a tenant's credential will reach that must be checked when it is set: the one given, else the
    provider's default if that is an IP address (Ollama's 127.0.0.1); a default public name needs no lookup."""
    if given:
        return given
    return default if ip_literal(httpx.URL(default).host) is not None else None


async def check_base_url(url: str, policy: UrlPolicy, resolver: Resolver = system_resolver) -> None:
    """The configuration-time check of a tenant-supplied base URL (see the module docstring)."""
    host, port = parse_base_url(url)
    try:
        with anyio.fail_after(RESOLVE_TIMEOUT_S):
            await resolve_checked(host, port, policy, resolver)
    except TimeoutError:
        raise ProviderUrlUnresolved(host, "the lookup timed out") from None
    except OSError as exc:
        raise ProviderUrlUnresolved(host, exc.strerror or type(exc).__name__) from None
