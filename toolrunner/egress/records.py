"""One structured record per connection attempt, and where records go.

``ConnectionSink`` is the interface the server's audit log implements (``server.egress_wiring``); ``MemorySink`` keeps
records in a list for tests and the bench. ``record`` is called once per attempt, allowed or denied, from the
proxy's event loop, so an implementation must not block (queue and write elsewhere).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

Decision = Literal["allow", "deny"]


@dataclass
class ConnectionRecord:
    """What happened to one attempt. ``rule`` is the policy rule that decided (``allow:…``, ``deny:…``,
    ``default``, ``ip-literal``) or the address check (``address:loopback`` …); ``limit`` names the proxy limit
    that refused or ended the connection (``connections``, ``duration``); ``error`` an upstream failure."""

    time: float
    tenant: str
    session: str | None
    call_id: str | None
    method: str
    host: str
    port: int
    address: str | None = None
    decision: Decision = "deny"
    rule: str = ""
    limit: str | None = None
    error: str | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    duration_ms: float = 0.0
    throttled_ms: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class ConnectionSink(Protocol):
    def record(self, rec: ConnectionRecord) -> None:
        """Take one finished attempt; must not block the event loop."""


@dataclass
class MemorySink:
    """Keeps every record in order: the test double of the audit sink."""

    records: list[ConnectionRecord] = field(default_factory=list)

    def record(self, rec: ConnectionRecord) -> None:
        self.records.append(rec)

