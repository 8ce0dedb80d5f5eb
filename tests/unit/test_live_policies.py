"""``LivePolicies``: a policy file's ``[egress]`` edit applies at the next lookup, any other edit is refused, and a
``~`` path is found (the expanded path is kept between lookups; docs/speed.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.egress_policies import LivePolicies

POLICY = """
name = "live"
cpus = 0.5
memory_mb = 256
pids = 128
tmpfs_mb = 16
nofile = 256
fsize_mb = 16
default_timeout_s = 20
max_timeout_s = 60
output_cap_bytes = 65536
max_concurrent_calls = 2
network = "allowlist"

[egress]
allow = ["localhost"]
"""


def _rewrite(path: Path, text: str) -> None:
    """A new file renamed over the old one, as an editor or a config manager writes it."""
    staged = path.with_suffix(".new")
    staged.write_text(text)
    staged.replace(path)


@pytest.mark.parametrize("tilde", [False, True])
def test_an_egress_edit_applies_at_the_next_lookup_and_another_edit_does_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tilde: bool) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    path = tmp_path / f"live-{tilde}.toml"
    path.write_text(POLICY)
    name = f"~/{path.name}" if tilde else str(path)
    live = LivePolicies()
    assert live.policy(name).egress.allow == ("localhost",)

    _rewrite(path, POLICY.replace('allow = ["localhost"]', 'allow = ["docs.example"]'))
    assert live.policy(name).egress.allow == ("docs.example",)

    _rewrite(path, POLICY.replace("memory_mb = 256", "memory_mb = 512").replace("localhost", "other.example"))
    kept = live.policy(name)
    assert kept.memory_mb == 256 and kept.egress.allow == ("docs.example",)
