"""The network part of a policy: which names a sandbox may reach through the egress proxy, and how much.

Three modes (``Policy.network``): ``none`` (no network at all, the default), ``allowlist`` (no route out but
the egress proxy, which lets through only what ``EgressRules`` allows) and ``open`` (Docker's bridge network,
unfiltered; ``bridge`` is its older spelling). A rule is ``name`` or ``*.suffix``, optionally ``:port``:

- ``pypi.org`` matches that name only; ``*.example.com`` matches every name below ``example.com`` (any depth)
  but not ``example.com`` itself — write both when both are meant;
- no port means any port; ``host:443`` means that port only;
- deny rules win over allow rules, and a name no rule allows is denied.

Bare ``*``, IP addresses, empty names and ports outside 1-65535 are refused when the file is read, with the
field named: a wildcard over everything is ``network = "open"`` (or the ``web`` preset, which is every public
name on ports 80 and 443), and addresses are never reached by number under ``allowlist``. The proxy refuses,
whatever the rules, names that resolve to a loopback, private, link-local or metadata address.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

NetworkMode = Literal["none", "allowlist", "open", "bridge"]

#: Presets a policy can name in ``egress.presets``; ``web`` is the only way to allow every public name.
PRESETS: dict[str, tuple[str, ...]] = {
    "nothing": (),
    "pypi": ("pypi.org:443", "files.pythonhosted.org:443"),
    "npm": ("registry.npmjs.org:443",),
    "packages": ("pypi.org:443", "files.pythonhosted.org:443", "registry.npmjs.org:443"),
    "web": ("*:80", "*:443"),
}

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_NUMERIC = re.compile(r"^[0-9a-fx.]+$")


def docker_network_mode(mode: NetworkMode) -> str:
    """The container's Docker network: ``allowlist`` keeps ``none`` (its way out is the proxy's socket)."""
    return "bridge" if mode in ("open", "bridge") else "none"


def normalise_host(host: str) -> str:
    """Lower case, no brackets, no trailing dot: the form rules and requests are compared in."""
    return host.strip().strip("[]").lower().rstrip(".")


def is_ip_literal(host: str) -> bool:
    """Whether ``host`` names an address without DNS, including the numeric forms ``inet_aton`` reads
    (``2130706433``, ``0x7f.1``), which resolvers turn into addresses although they do not look like one."""
    host = normalise_host(host).split("%")[0]
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    if _NUMERIC.fullmatch(host) and any(c.isdigit() for c in host):
        try:
            socket.inet_aton(host)
            return True
        except OSError:
            return False
    return False


@dataclass(frozen=True)
class Rule:
    """One parsed rule: ``suffix`` set for ``*.suffix``, ``name`` for an exact name, neither for a preset's
    any-name; ``port`` None for any port."""

    text: str
    name: str | None
    suffix: str | None
    port: int | None

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.suffix is not None:
            return host.endswith("." + self.suffix)
        return self.name is None or host == self.name


def parse_rule(text: str, *, preset: bool = False) -> Rule:
    """Parse ``name``, ``*.suffix`` or either with ``:port``; ValueError says what is wrong with it."""
    raw = text.strip()
    host, port = raw, None
    if raw.count(":") == 1:
        host, port_text = raw.split(":")
        if not port_text.isdigit():
            raise ValueError(f"rule {text!r}: port {port_text!r} is not a number")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ValueError(f"rule {text!r}: port {port} is out of range (1-65535)")
    elif ":" in raw:
        raise ValueError(f"rule {text!r}: IP addresses are not allowed, name a host")
    host = normalise_host(host)
    if not host:
        raise ValueError(f"rule {text!r}: empty host name")
    if host == "*":
        if preset:
            return Rule(raw, None, None, port)
        raise ValueError(f"rule {text!r}: a bare '*' allows everything; use network = \"open\" or the 'web' preset")
    if is_ip_literal(host):
        raise ValueError(f"rule {text!r}: IP addresses are not allowed, name a host")
    wildcard = host.startswith("*.")
    labels = (host[2:] if wildcard else host).split(".")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise ValueError(f"rule {text!r}: {label!r} is not a valid DNS label (ASCII letters, digits, '-', "
                             "'_'; use the punycode form of an international name)")
    if wildcard and len(labels) < 2:
        raise ValueError(f"rule {text!r}: a wildcard needs at least two labels after '*.' (e.g. *.example.com)")
    name = ".".join(labels)
    return Rule(raw, None if wildcard else name, name if wildcard else None, port)


@dataclass(frozen=True)
class Decision:
    """What the rules say about one (host, port): ``rule`` is the rule text that decided, ``allow:``/``deny:``
    prefixed, or ``default`` (nothing matched) or ``ip-literal``."""

    allowed: bool
    rule: str


class EgressRules(BaseModel):
    """``[egress]`` in a policy file: rules, presets and the proxy's per-tenant limits."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    presets: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    max_connections: int = Field(default=32, ge=1, le=4096)
    bandwidth_kbps: int | None = Field(default=None, ge=8, le=100_000_000)
    max_connection_s: float = Field(default=600, gt=0, le=86_400)
    #: New connections a second, per tenant (a burst of max(this, max_connections) at once): every connection
    #: is an audit record, and the audit disk is everyone's.
    connections_per_s: float = Field(default=20, gt=0, le=10_000)
    connect_timeout_s: float = Field(default=10, gt=0, le=300)

    @field_validator("presets")
    @classmethod
    def _known_presets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name not in PRESETS:
                raise ValueError(f"unknown preset {name!r} (known: {', '.join(sorted(PRESETS))})")
        return value

    @field_validator("allow", "deny")
    @classmethod
    def _valid_rules(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            parse_rule(text)
        return value

    @property
    def configured(self) -> bool:
        """Whether anything here differs from the defaults (rules under a mode other than allowlist do not)."""
        return bool(self.presets or self.allow or self.deny)

    def summary(self) -> dict[str, object]:
        """What ``GET /v1/sandbox`` shows: the effective rules (presets expanded) and the proxy's limits."""
        return {"presets": list(self.presets), "allow": [r.text for r in self.allow_rules()],
                "deny": list(self.deny), "max_connections": self.max_connections,
                "bandwidth_kbps": self.bandwidth_kbps, "max_connection_s": self.max_connection_s,
                "connections_per_s": self.connections_per_s}

    def allow_rules(self) -> tuple[Rule, ...]:
        preset = [parse_rule(t, preset=True) for name in self.presets for t in PRESETS[name]]
        return (*preset, *(parse_rule(t) for t in self.allow))

    def deny_rules(self) -> tuple[Rule, ...]:
        return tuple(parse_rule(t) for t in self.deny)

    def matcher(self) -> Matcher:
        return Matcher(self.allow_rules(), self.deny_rules())

    def decide(self, host: str, port: int) -> Decision:
        """Deny rules first, then allow rules; IP literals and unmatched names are denied."""
        return self.matcher().decide(host, port)


@dataclass(frozen=True)
class Matcher:
    """Parsed rules, built once per policy so the proxy does not re-parse them per connection."""

    allow: tuple[Rule, ...]
    deny: tuple[Rule, ...]

    def decide(self, host: str, port: int) -> Decision:
        host = normalise_host(host)
        if is_ip_literal(host):
            return Decision(False, "ip-literal")
        for rule in self.deny:
            if rule.matches(host, port):
                return Decision(False, f"deny:{rule.text}")
        for rule in self.allow:
            if rule.matches(host, port):
                return Decision(True, f"allow:{rule.text}")
        return Decision(False, "default")
