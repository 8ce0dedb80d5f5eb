"""Which IP addresses a tenant-supplied provider URL may reach, and the owner's exceptions to the rule.

``forbidden_reason(ip)`` names why an address is not a public unicast one (loopback, RFC 1918, link-local and
the cloud metadata address, CGNAT, multicast, unspecified, documentation, reserved …), or returns None.
Addresses that embed an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4
``2002::/16``) are judged by the embedded one, because that is where the packets end up.
``ip_literal(host)`` also reads the numeric forms ``inet_aton`` accepts (``2130706433``, ``0x7f000001``,
``127.1``), which resolvers turn into addresses although they do not look like one.

``UrlPolicy`` is the owner's setting: allow every address, or allow listed host names and networks.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_V4_RULES: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified ('this network')"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("100.64.0.0/10", "shared address space (CGNAT, RFC 6598)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (includes the cloud metadata address 169.254.169.254)"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved (includes broadcast)"),
)
_V6_RULES: tuple[tuple[str, str], ...] = (
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/32", "Teredo"),
    ("2001:db8::/32", "documentation"),
    ("fc00::/7", "unique local (ULA)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)
_V4 = tuple((ipaddress.IPv4Network(n), why) for n, why in _V4_RULES)
_V6 = tuple((ipaddress.IPv6Network(n), why) for n, why in _V6_RULES)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NUMERIC_HOST = re.compile(r"^[0-9a-fx.]+$")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries to (mapped, NAT64 well-known prefix, 6to4), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why a tenant's provider URL may not reach ``ip``, or None for a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            why = forbidden_reason(inner)
            return f"{why}, embedded in {ip}" if why else None
        rules: Iterable[tuple[IPNetwork, str]] = _V6
    else:
        rules = _V4
    for network, why in rules:
        if ip in network:
            return why
    if ip.is_multicast:
        return "multicast"
    if not ip.is_global or ip.is_reserved:
        return "not a global unicast address"
    return None


def ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` denotes without DNS: a standard literal, or a numeric form ``inet_aton`` reads."""
    host = host.strip("[]").split("%")[0].lower().rstrip(".")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.match(host) and any(c.isdigit() for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def normalise_host(host: str) -> str:
    return host.strip("[]").lower().rstrip(".")


@dataclass(frozen=True)
class UrlPolicy:
    """The owner's exceptions: ``allow_private`` lifts the address rule; ``hosts`` (names, compared without
    case or trailing dot) and ``networks`` (addresses or CIDRs) lift it for what they name."""

    allow_private: bool = False
    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, allow_private: bool, entries: Iterable[str]) -> UrlPolicy:
        """From settings: each entry an IP, a CIDR, or a host name; a malformed entry raises ValueError."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if re.fullmatch(r"[A-Za-z0-9.-]+", entry) and not entry.startswith((".", "-")):
                hosts.add(normalise_host(entry))
            else:
                raise ValueError(f"provider URL allow-list entry {entry!r} is not an IP, CIDR or host name")
        return cls(allow_private, frozenset(hosts), tuple(networks))

    def host_allowed(self, host: str) -> bool:
        return self.allow_private or normalise_host(host) in self.hosts

    def address_allowed(self, ip: IPAddress) -> bool:
        if self.allow_private or forbidden_reason(ip) is None:
            return True
        return any(ip.version == net.version and ip in net for net in self.networks)
