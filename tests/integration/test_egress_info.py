"""GET /v1/sandbox's source (SandboxManager.info) shows the network mode and, under allowlist, the allow-list."""

from __future__ import annotations

from typing import Any

from policies.loader import policy_for
from policies.model import Policy


def test_info_shows_the_allow_list(harness: Any) -> None:
    """An allowlist tenant's info has its mode, the expanded rules and the proxy limits; others have none."""
    harness.policies["erin"] = Policy.model_validate({
        **policy_for("ci").model_dump(), "network": "allowlist",
        "egress": {"presets": ["pypi"], "allow": ["github.com:443"], "deny": ["gist.github.com"],
                   "max_connections": 4}})
    info = harness.run(harness.manager.info("erin"))
    assert info["limits"]["network"] == "allowlist"
    assert info["egress"] == {"presets": ["pypi"], "allow": ["pypi.org:443", "files.pythonhosted.org:443",
                                                            "github.com:443"],
                              "deny": ["gist.github.com"], "max_connections": 4, "bandwidth_kbps": None,
                              "max_connection_s": 600.0, "connections_per_s": 20.0}
    other = harness.run(harness.manager.info("frank"))
    assert other["limits"]["network"] == "none" and other["egress"] is None
