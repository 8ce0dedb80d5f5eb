"""``OPENANALYST_DOCKER_HOSTS``: the engines sandboxes are spread over, each with its options.

Entries are separated by commas; each is an engine address followed by space-separated options::

    unix:///var/run/docker.sock capacity=20, tcp://10.0.0.5:2376 tls=/etc/openanalyst/e2 capacity=40,
    ssh://oa@10.0.0.6 capacity=10

``tls=DIR`` is the Docker CLI's directory (``ca.pem``, ``cert.pem``, ``key.pem``) for a ``tcp://`` engine;
``capacity=N`` bounds this server's containers on that engine (running or stopped; none: no bound of its
own); ``ssh_config=FILE`` overrides ``OPENANALYST_SSH_CONFIG`` for one ``ssh://`` engine. Every entry is
checked at start and a bad one stops the start with a message naming it (its position and its text).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from toolrunner.engines import EngineAddress, EngineAddressError, engine_from_environment, parse_engine

MAX_CAPACITY = 4096


@dataclass(frozen=True)
class EngineEntry:
    """One engine of the list: where it is and how many of this server's containers it may hold."""

    address: EngineAddress
    capacity: int | None = None


def _capacity(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= MAX_CAPACITY:
        raise EngineAddressError(f"capacity must be a whole number from 1 to {MAX_CAPACITY}, not {value!r}")
    return int(value)


def _entry(raw: str, *, ssh_config: Path | None, allow_plain_tcp: bool) -> EngineEntry:
    url, *options = raw.split()
    tls_dir: Path | None = None
    capacity: int | None = None
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not value:
            raise EngineAddressError(f"option {option!r} is not key=value")
        if key == "tls":
            tls_dir = Path(value)
        elif key == "capacity":
            capacity = _capacity(value)
        elif key == "ssh_config":
            ssh_config = Path(value)
        else:
            raise EngineAddressError(f"unknown option {key!r} (tls=DIR, capacity=N, ssh_config=FILE)")
    if tls_dir is not None and not url.startswith("tcp://"):
        raise EngineAddressError("tls= applies to a tcp:// engine only")
    address = parse_engine(url, tls_dir=tls_dir, ssh_config=ssh_config, allow_plain_tcp=allow_plain_tcp)
    return EngineEntry(address=address, capacity=capacity)


def parse_engine_list(text: str, *, ssh_config: Path | None = None,
                      allow_plain_tcp: bool = False) -> list[EngineEntry]:
    """Every entry checked; the first bad one raises ``EngineAddressError`` naming it."""
    entries: list[EngineEntry] = []
    for number, raw in enumerate(text.split(","), 1):
        try:
            if not raw.strip():
                raise EngineAddressError("empty entry")
            entry = _entry(raw.strip(), ssh_config=ssh_config, allow_plain_tcp=allow_plain_tcp)
            if any(e.address.url == entry.address.url for e in entries):
                raise EngineAddressError(f"{entry.address.url} is listed twice")
        except EngineAddressError as exc:
            raise EngineAddressError(f"OPENANALYST_DOCKER_HOSTS entry {number} ({raw.strip()!r}): {exc}") from None
        entries.append(entry)
    return entries


def engines_from_environment(hosts: str | None, environ: Mapping[str, str]) -> list[EngineEntry]:
    """The configured list, or (unset) the one engine the Docker CLI would use, without a bound of its own."""
    if hosts is None or not hosts.strip():
        return [EngineEntry(engine_from_environment(dict(environ)))]
    ssh_config = environ.get("OPENANALYST_SSH_CONFIG")
    plain = environ.get("OPENANALYST_DOCKER_PLAIN_TCP", "").strip().lower() in ("1", "true", "yes")
    return parse_engine_list(hosts, ssh_config=Path(ssh_config) if ssh_config else None, allow_plain_tcp=plain)
