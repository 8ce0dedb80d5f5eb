"""The provider-URL rule (server/providers/addresses.py) and the egress proxy's rule
(toolrunner/egress/addresses.py) are two copies of one table, kept apart because their reasons are worded for
different readers. This keeps them from drifting: both refuse exactly the same networks, the same way."""

from __future__ import annotations

import ipaddress

from server.providers import addresses as provider
from toolrunner.egress import addresses as egress


def test_both_tables_list_the_same_networks() -> None:
    ours = {net for net, _ in provider._V4 + provider._V6}
    theirs = {net for net, _ in egress._NETS}
    assert ours == theirs


def test_both_rules_agree_on_each_network_edge_and_embedded_forms() -> None:
    samples: list[provider.IPAddress] = []
    for net, _ in provider._V4 + provider._V6:
        samples += [net.network_address, net.broadcast_address]
        if net.version == 4:
            v4 = net.network_address
            samples += [ipaddress.IPv6Address(f"::ffff:{v4}"),
                        ipaddress.IPv6Address((0x64FF9B << 96) | int(v4)),
                        ipaddress.IPv6Address((0x2002 << 112) | (int(v4) << 80))]
    samples += [ipaddress.ip_address(a) for a in ("8.8.8.8", "1.1.1.1", "2606:4700::1", "::ffff:8.8.8.8")]
    for ip in samples:
        assert (provider.forbidden_reason(ip) is None) == (egress.address_kind(ip) is None), ip
