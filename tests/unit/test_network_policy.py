"""The network policy: modes, rule parsing, the matcher (deny wins), presets, and file errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.loader import PolicyError, load_policy, policy_for
from policies.model import Policy
from policies.network import PRESETS, EgressRules, docker_network_mode, is_ip_literal, parse_rule

BASE = ("cpus = 1\nmemory_mb = 256\npids = 64\ntmpfs_mb = 16\nnofile = 256\nfsize_mb = 16\n"
        "default_timeout_s = 10\nmax_timeout_s = 20\noutput_cap_bytes = 4096\nmax_concurrent_calls = 2\n")


def _load(tmp_path: Path, body: str) -> Policy:
    path = tmp_path / "net.toml"
    path.write_text(BASE + body)
    return load_policy(path)


def test_presets_keep_their_network_mode_and_default_is_none() -> None:
    """Shipped presets are unchanged: default and ci have no network, and nothing is configured for egress."""
    assert policy_for("default").network == "none" and not policy_for("default").egress.configured
    assert docker_network_mode("none") == "none" and docker_network_mode("allowlist") == "none"
    assert docker_network_mode("open") == "bridge" and docker_network_mode("bridge") == "bridge"


def test_exact_names_wildcards_and_ports() -> None:
    """An exact name matches only itself; *.suffix matches any depth below but not the suffix; a port pins it."""
    rules = EgressRules(allow=("pypi.org", "*.example.com:443"))
    assert rules.decide("pypi.org", 443).allowed and rules.decide("PyPI.org.", 8080).allowed
    assert not rules.decide("evil-pypi.org", 443).allowed and not rules.decide("pypi.org.evil.net", 443).allowed
    assert rules.decide("a.example.com", 443).rule == "allow:*.example.com:443"
    assert rules.decide("a.b.example.com", 443).allowed
    assert not rules.decide("example.com", 443).allowed
    assert not rules.decide("a.example.com", 80).allowed
    assert not rules.decide("xexample.com", 443).allowed
    assert rules.decide("other.org", 443).rule == "default"


def test_deny_wins_over_allow() -> None:
    """A name both allowed (by a wildcard) and denied (exactly) is denied, and the deny rule is named."""
    rules = EgressRules(allow=("*.example.com",), deny=("secret.example.com",))
    decision = rules.decide("secret.example.com", 443)
    assert not decision.allowed and decision.rule == "deny:secret.example.com"
    assert rules.decide("public.example.com", 443).allowed


def test_ip_literals_are_never_matched() -> None:
    """Addresses, including the numeric forms a resolver reads, are denied even under the web preset."""
    rules = EgressRules(presets=("web",))
    for host in ("127.0.0.1", "169.254.169.254", "2130706433", "0x7f000001", "127.1", "[::1]", "::ffff:7f00:1"):
        assert is_ip_literal(host), host
        assert rules.decide(host, 80).rule == "ip-literal", host
    assert not is_ip_literal("pypi.org") and not is_ip_literal("deadbeef.example")


def test_presets() -> None:
    """nothing allows nothing; pypi and npm allow their indexes on 443 only; web allows any name on 80/443."""
    assert not EgressRules(presets=("nothing",)).decide("pypi.org", 443).allowed
    pypi = EgressRules(presets=("pypi",))
    assert pypi.decide("files.pythonhosted.org", 443).allowed and not pypi.decide("pypi.org", 80).allowed
    assert not pypi.decide("registry.npmjs.org", 443).allowed
    assert EgressRules(presets=("npm",)).decide("registry.npmjs.org", 443).allowed
    web = EgressRules(presets=("web",), deny=("*.internal.example",))
    assert web.decide("docs.python.org", 443).allowed and web.decide("x.org", 80).allowed
    assert not web.decide("x.org", 22).allowed and not web.decide("a.internal.example", 443).allowed
    assert set(PRESETS) == {"nothing", "pypi", "npm", "packages", "web"}


@pytest.mark.parametrize(("rule", "words"), [
    ("", "empty host"),
    ("*", "bare '*'"),
    ("*:443", "bare '*'"),
    ("pypi.org:0", "out of range"),
    ("pypi.org:65536", "out of range"),
    ("pypi.org:https", "not a number"),
    ("10.0.0.1", "IP addresses"),
    ("::1", "IP addresses"),
    ("*.com", "two labels"),
    ("bad name.org", "valid DNS label"),
    ("-x.org", "valid DNS label"),
    ("*.*.org", "valid DNS label"),
    ("ünïcode.org", "punycode"),
])
def test_bad_rules_are_refused(rule: str, words: str) -> None:
    """Each malformed rule raises a ValueError that says what is wrong."""
    with pytest.raises(ValueError, match="rule") as info:
        parse_rule(rule)
    assert words in str(info.value)


@pytest.mark.parametrize(("body", "field", "words"), [
    ('network = "allowlist"\n[egress]\nallow = ["ok.org", "*"]\n', "egress.allow", "bare '*'"),
    ('network = "allowlist"\n[egress]\ndeny = [""]\n', "egress.deny", "empty host"),
    ('network = "allowlist"\n[egress]\nallow = ["ok.org:70000"]\n', "egress.allow", "out of range"),
    ('network = "allowlist"\n[egress]\npresets = ["everything"]\n', "egress.presets", "unknown preset"),
    ('network = "allowlist"\n[egress]\nmax_connections = 0\n', "egress.max_connections", "greater than"),
    ('network = "allowlist"\n[egress]\nalow = ["x.org"]\n', "egress.alow", "Extra inputs"),
    ('network = "internet"\n', "network", "Input should be"),
])
def test_a_bad_file_names_the_file_and_the_field(tmp_path: Path, body: str, field: str, words: str) -> None:
    """A bad egress rule stops loading with the file's path and the field in the message."""
    with pytest.raises(PolicyError) as info:
        _load(tmp_path, body)
    assert info.value.field == field
    assert str(tmp_path / "net.toml") in str(info.value) and words in str(info.value)


def test_rules_outside_allowlist_are_refused(tmp_path: Path) -> None:
    """Rules under network = "open" or "none" would do nothing, so the file is refused rather than misread."""
    with pytest.raises(PolicyError, match="only to network = 'allowlist'"):
        _load(tmp_path, 'network = "open"\n[egress]\nallow = ["pypi.org"]\n')


def test_an_allowlist_policy_loads(tmp_path: Path) -> None:
    """A package-index allow-list with a deny rule and limits loads and decides as written."""
    policy = _load(tmp_path, 'network = "allowlist"\n[egress]\npresets = ["packages"]\n'
                             'allow = ["github.com:443", "*.githubusercontent.com:443"]\n'
                             'deny = ["gist.githubusercontent.com"]\nmax_connections = 4\nbandwidth_kbps = 8000\n')
    egress = policy.egress
    assert policy.network == "allowlist" and egress.max_connections == 4
    assert egress.decide("raw.githubusercontent.com", 443).allowed
    assert not egress.decide("gist.githubusercontent.com", 443).allowed
    assert egress.decide("registry.npmjs.org", 443).rule == "allow:registry.npmjs.org:443"
