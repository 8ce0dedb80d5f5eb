"""Which resolved addresses the egress proxy may connect to, and the owner's exception for private targets.

The proxy resolves names itself and refuses any name with an address that is not public unicast: loopback,
RFC 1918, CGNAT, link-local (with the metadata address 169.254.169.254), unique-local, multicast, reserved,
documentation, unspecified, and the host's own interface addresses (a public address of this machine is
still the host's ports). Addresses that carry an IPv4 address inside IPv6 (mapped, NAT64, 6to4) are judged by
the IPv4 one. The same table as ``server/providers/addresses.py``; repeated because toolrunner never imports
server.

``AddressPolicy.private_networks`` is the owner's exception (tests reach their local fakes through it); the
metadata address is refused even inside it.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA = (ipaddress.IPv4Address("169.254.169.254"), ipaddress.IPv6Address("fd00:ec2::254"))
_RULES: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified"), ("10.0.0.0/8", "private"), ("100.64.0.0/10", "shared (CGNAT)"),
    ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link-local"), ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol"), ("192.0.2.0/24", "documentation"), ("192.88.99.0/24", "6to4 relay"),
    ("192.168.0.0/16", "private"), ("198.18.0.0/15", "benchmarking"), ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"), ("224.0.0.0/4", "multicast"), ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"), ("::1/128", "loopback"), ("::/96", "IPv4-compatible"),
    ("64:ff9b:1::/48", "local-use NAT64"), ("100::/64", "discard-only"), ("2001::/32", "Teredo"),
    ("2001:db8::/32", "documentation"), ("fc00::/7", "unique local"), ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"), ("ff00::/8", "multicast"),
)
_NETS = tuple((ipaddress.ip_network(net), why) for net, why in _RULES)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def address_kind(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address ("loopback", "private", …), or None when it is one."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            return address_kind(inner)
    if ip in METADATA:
        return "metadata"
    for net, why in _NETS:
        if ip.version == net.version and ip in net:
            return why
    if not ip.is_global or ip.is_reserved or ip.is_multicast:
        return "not global"
    return None


def _local_addresses() -> frozenset[IPAddress]:
    """This host's interface addresses (from its routes to the outside: enough to spot its public ones)."""
    found: set[IPAddress] = set()
    try:
        import psutil  # host-side only; imported here so the module stays importable without it

        for addrs in psutil.net_if_addrs().values():
            for addr in addrs:
                if addr.family in (socket.AF_INET, socket.AF_INET6):
                    try:
                        found.add(ipaddress.ip_address(addr.address.split("%")[0]))
                    except ValueError:
                        continue
    except ImportError:  # pragma: no cover - psutil is a server dependency
        pass
    return frozenset(found)


@dataclass
class AddressPolicy:
    """The owner's setting: networks that may be reached although they are not public (off by default)."""

    private_networks: tuple[IPNetwork, ...] = ()
    refresh_s: float = 30.0
    _local: frozenset[IPAddress] = field(default_factory=frozenset, repr=False)
    _local_at: float = field(default=-1e9, repr=False)

    @classmethod
    def from_strings(cls, entries: list[str] | tuple[str, ...]) -> AddressPolicy:
        return cls(tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries if e.strip()))

    def _host_addresses(self) -> frozenset[IPAddress]:
        now = time.monotonic()
        if now - self._local_at > self.refresh_s:
            self._local, self._local_at = _local_addresses(), now
        return self._local

    def refusal(self, ip: IPAddress) -> str | None:
        """Why the proxy must not connect to ``ip`` ("loopback", "metadata", "host", …), or None."""
        if ip in METADATA or (isinstance(ip, ipaddress.IPv6Address) and _embedded_v4(ip) in METADATA):
            return "metadata"
        if any(ip.version == net.version and ip in net for net in self.private_networks):
            return None
        kind = address_kind(ip)
        if kind is not None:
            return kind
        if ip in self._host_addresses():
            return "host"
        return None
