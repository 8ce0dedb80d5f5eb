"""The capacity arithmetic: the default cap from memory, and which idle container gives way."""

from __future__ import annotations

from toolrunner.capacity import Holder, default_live_cap, least_recently_used_idle

GIB = 1024**3


def test_default_cap_fills_half_the_host_at_the_memory_limit() -> None:
    """24 GiB at 512 MB gives 24; a tiny host still gets 2 and a huge one at most 256."""
    assert default_live_cap(512, 24 * GIB) == 24
    assert default_live_cap(2048, 24 * GIB) == 6
    assert default_live_cap(512, 1 * GIB) == 2
    assert default_live_cap(64, 4096 * GIB) == 256


def test_the_victim_is_the_idle_holder_used_longest_ago() -> None:
    """Busy holders are never chosen, however old; with none idle there is no victim."""
    holders = [Holder("a", 5.0, False), Holder("b", 1.0, True), Holder("c", 3.0, False)]
    assert least_recently_used_idle(holders) == "c"
    assert least_recently_used_idle([Holder("b", 1.0, True)]) is None
