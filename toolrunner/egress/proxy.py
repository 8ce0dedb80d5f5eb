"""The egress proxy: an asyncio HTTP forward proxy (plain HTTP and ``CONNECT``, no TLS interception) that lets a
sandbox reach only what its tenant's ``[egress]`` rules allow.

Per attempt, in this order: parse the head; the tenant's connection limit; the rules (deny wins, IP literals
denied); resolve the name once; refuse it if any address is loopback/private/link-local/metadata/the host's
own (``AddressPolicy``); connect to a checked address; pipe bytes under the tenant's bandwidth bucket and the
connection's duration limit. Each attempt ends in exactly one ``ConnectionRecord`` to the sink.

Who is asking comes first from the listener, not from the request: every listener is bound to an
``Identity`` (the tenant, whose container alone has that socket mounted) when it is made, so code in a sandbox
cannot claim another tenant. Session and call come from the proxy credential (``Proxy-Authorization``'s user
name, from the ``HTTP(S)_PROXY`` the runner gives each call) through the host's ``attribute`` hook; it only
narrows the attribution inside the listener's tenant (docs/egress.md says why one session cannot read
another's credential).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from policies.network import EgressRules, Matcher, normalise_host
from toolrunner.egress.addresses import AddressPolicy, IPAddress
from toolrunner.egress.httphead import MAX_HEAD, BadRequest, ProxyRequest, parse_head
from toolrunner.egress.limits import TenantLimits, TokenBucket
from toolrunner.egress.records import ConnectionRecord, ConnectionSink
from toolrunner.egress.relay import HeadTooLarge, Side, relay
from toolrunner.egress.resolver import ResolveError, Resolver, SystemResolver

HEAD_TIMEOUT_S = 10.0
#: Connections of one tenant still sending their request head at once. The connection limit is counted from
#: the decision on, so without this bound a tenant could hold any number of silent connections (each a task and
#: a descriptor of the server) for HEAD_TIMEOUT_S; a client sends its head at once, so a few suffice.
MAX_HEADLESS = 64


@dataclass(frozen=True)
class Identity:
    """Whom a listener serves; fixed when the listener is made."""

    tenant: str
    session: str | None = None


RulesFor = Callable[[str], EgressRules | None]


@dataclass(frozen=True)
class Attribution:
    """Which session and call a connection belongs to, as the host's registry of proxy credentials says."""

    session: str | None = None
    call_id: str | None = None


#: (listener identity, credential or None) → attribution, or None to refuse with 407 (credentials.py). Host
#: code: it alone knows which credential it gave to which call. The default trusts only the listener.
Attribute = Callable[[Identity, str | None], Attribution | None]
#: tenant → the name of a host-side limit that refuses new connections now (the audit log cannot keep up), or None.
Admit = Callable[[str], str | None]
#: How a checked (address, port) is opened with the given protocol; tests pass one that also refuses anything
#: off the loopback range, so that a check that failed could still send nothing off the machine.
Connector = Callable[[str, int, Callable[[], Side]], Coroutine[Any, Any, Side]]


async def open_tcp(address: str, port: int, factory: Callable[[], Side]) -> Side:
    _transport, side = await asyncio.get_running_loop().create_connection(factory, address, port)
    return side


class _NoAttempt(Exception):
    """The client closed before sending anything: nothing was asked, so nothing is recorded."""


class Refused(Exception):
    """An attempt the proxy answers itself: status, decision rule or limit, and a message for the client."""

    def __init__(self, status: int, reason: str, message: str, *, rule: str = "", limit: str | None = None,
                 error: str | None = None) -> None:
        super().__init__(message)
        self.status, self.reason, self.rule, self.limit, self.error = status, reason, rule, limit, error


def _refusal(exc: Refused, rec: ConnectionRecord) -> bytes:
    body = (str(exc) + "\n").encode()
    head = (f"HTTP/1.1 {exc.status} {exc.reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\nX-Egress-Decision: deny\r\n"
            f"X-Egress-Rule: {rec.limit or rec.rule or rec.error or ''}\r\n")
    if exc.status == 407:
        head += 'Proxy-Authenticate: Basic realm="openanalyst-egress"\r\n'
    head += "\r\n"
    return head.encode() + body


class EgressProxy:
    """Checks and forwards connections for many tenants; ``rules_for`` gives a tenant's rules (None: the tenant
    is not under ``allowlist``, so nothing passes), ``attribute`` maps a credential to a session and call."""

    def __init__(self, rules_for: RulesFor, sink: ConnectionSink, *, addresses: AddressPolicy | None = None,
                 resolver: Resolver | None = None, attribute: Attribute | None = None,
                 connector: Connector = open_tcp, admit: Admit | None = None,
                 max_headless: int = MAX_HEADLESS) -> None:
        self._rules_for = rules_for
        self._sink = sink
        self._admit = admit or (lambda _tenant: None)
        self._addresses = addresses or AddressPolicy()
        self._resolver: Resolver = resolver or SystemResolver()
        self._attribute = attribute or (lambda identity, _credential: Attribution(identity.session))
        self._connector = connector
        self._matchers: dict[EgressRules, Matcher] = {}
        self._limits: dict[str, TenantLimits] = {}
        self._max_headless = max_headless
        self._headless: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve_tcp(self, identity: Identity, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
        """A TCP listener for ``identity`` (tests and the bench; sandboxes get a Unix socket)."""
        return await asyncio.get_running_loop().create_server(self._factory(identity), host, port)

    async def serve_unix(self, identity: Identity, path: str) -> asyncio.Server:
        """A Unix-socket listener for ``identity``: the socket one session's container has mounted."""
        return await asyncio.get_running_loop().create_unix_server(self._factory(identity), path)

    def _factory(self, identity: Identity) -> Callable[[], Side]:
        def make() -> Side:
            side = Side(collect_head=True, max_head=MAX_HEAD)
            task = asyncio.get_running_loop().create_task(self.handle(identity, side))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return side
        return make

    def _tenant_limits(self, tenant: str, rules: EgressRules) -> TenantLimits:
        limits = self._limits.get(tenant)
        rate = rules.bandwidth_kbps * 125 if rules.bandwidth_kbps else None  # kbit/s → bytes/s
        burst = max(rules.connections_per_s, rules.max_connections)
        if limits is None or limits.max_connections != rules.max_connections or (
                (limits.bucket.rate if limits.bucket else None) != rate) or (
                (limits.rate.rate, limits.rate.burst) != (rules.connections_per_s, burst)):
            limits = TenantLimits(rules.max_connections, TokenBucket(rate) if rate else None,
                                  TokenBucket(rules.connections_per_s, burst), limits.open if limits else 0)
            self._limits[tenant] = limits
        return limits

    def open_connections(self, tenant: str) -> int:
        limits = self._limits.get(tenant)
        return limits.open if limits else 0

    def headless_connections(self, tenant: str) -> int:
        """The tenant's connections still sending their request head (bounded by ``max_headless``)."""
        return self._headless.get(tenant, 0)

    async def handle(self, identity: Identity, client: Side) -> None:
        """Serve one client connection: one attempt, one record."""
        started, wall = time.monotonic(), time.time()
        rec = ConnectionRecord(wall, identity.tenant, identity.session, None, "", "", 0)
        limits: TenantLimits | None = None
        upstream: Side | None = None
        try:
            request, rest = await self._read_request(identity.tenant, client, rec)
            who = self._attribute(identity, request.credential)
            if who is None:
                raise Refused(407, "Proxy Authentication Required", "egress refused: no valid proxy credential "
                              "(use the HTTP_PROXY/HTTPS_PROXY this call was given)", rule="credential")
            rec.session, rec.call_id = who.session, who.call_id
            rules = self._rules_for(identity.tenant)
            if rules is None:
                raise Refused(403, "Forbidden", f"egress denied: tenant {identity.tenant!r} has no allow-list",
                              rule="mode")
            held = self._admit(identity.tenant)
            if held is not None:  # fail closed: a connection no record could be kept of is not made
                raise Refused(503, "Service Unavailable", f"egress refused: the audit log is not keeping up "
                              f"(limit {held!r}); try again shortly", limit=held)
            limits = self._tenant_limits(identity.tenant, rules)
            if not limits.try_open():
                limits = None
                raise Refused(429, "Too Many Requests", f"egress refused: {rules.max_connections} connections "
                              "already open for this tenant (limit 'connections')", limit="connections")
            upstream = await self._open(rules, limits, rec)
            rec.decision = "allow"
            if request.method == "CONNECT":
                client.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            first = request.upstream_head + rest  # rest: what the client sent behind its head, in the same read
            waited = limits.bucket.spend(len(first)) if limits.bucket else 0.0  # they pass the bucket too
            if waited:
                await asyncio.sleep(waited)
            if not await relay(client, upstream, limits.bucket, first,
                               rules.max_connection_s - (time.monotonic() - started)):
                rec.limit = "duration"
            rec.bytes_up = client.received + len(first)
            rec.bytes_down = upstream.received
            rec.throttled_ms = round((waited + client.throttled_s + upstream.throttled_s) * 1000, 3)
        except Refused as exc:
            rec.rule, rec.limit, rec.error = rec.rule or exc.rule, exc.limit, exc.error
            client.write(_refusal(exc, rec))
        except _NoAttempt:
            rec.method = ""
        except OSError as exc:
            rec.error = rec.error or f"client: {exc.__class__.__name__}"
        finally:
            if limits is not None:
                limits.close()
            for side in (upstream, client):
                if side is not None:
                    side.close()
            rec.duration_ms = round((time.monotonic() - started) * 1000, 3)
            if rec.method or rec.rule or rec.limit:
                self._sink.record(rec)

    async def _read_request(self, tenant: str, client: Side, rec: ConnectionRecord) -> tuple[ProxyRequest, bytes]:
        assert client.head is not None
        headless = self._headless.get(tenant, 0)
        if headless >= self._max_headless:
            client.head.cancel()  # never read
            await asyncio.sleep(0)  # the transport is attached a turn after this task starts, then it can answer
            raise Refused(429, "Too Many Requests", f"egress refused: {headless} connections of this tenant have "
                          "not sent their request yet (limit 'connections')", limit="connections")
        self._headless[tenant] = headless + 1
        try:
            head, rest = await asyncio.wait_for(asyncio.shield(client.head), HEAD_TIMEOUT_S)
        except ConnectionError as exc:
            if not client.head_bytes:
                raise _NoAttempt from exc  # connected and left without a byte: a readiness probe, not an attempt
            raise Refused(400, "Bad Request", "egress: no complete request head", rule="bad-request") from exc
        except (HeadTooLarge, TimeoutError) as exc:
            raise Refused(400, "Bad Request", "egress: no complete request head", rule="bad-request") from exc
        finally:
            left = self._headless[tenant] - 1
            if left:
                self._headless[tenant] = left
            else:
                del self._headless[tenant]
        try:
            request = parse_head(head)
        except BadRequest as exc:
            raise Refused(400, "Bad Request", f"egress: {exc}", rule="bad-request") from exc
        rec.method, rec.host, rec.port = request.method, normalise_host(request.host), request.port
        return request, rest

    def _matcher(self, rules: EgressRules) -> Matcher:
        matcher = self._matchers.get(rules)
        if matcher is None:
            matcher = self._matchers[rules] = rules.matcher()
        return matcher

    async def _open(self, rules: EgressRules, limits: TenantLimits, rec: ConnectionRecord) -> Side:
        decision = self._matcher(rules).decide(rec.host, rec.port)
        rec.rule = decision.rule
        if not decision.allowed:
            why = ("an IP address (name a host)" if decision.rule == "ip-literal"
                   else "not allowed by this tenant's rules")
            raise Refused(403, "Forbidden", f"egress denied: {rec.host}:{rec.port} is {why} ({decision.rule})")
        if not limits.take_rate():  # counted once the rules allow it: refusals have their own budget (the audit sink)
            raise Refused(429, "Too Many Requests", f"egress refused: more than {rules.connections_per_s:g} new "
                          "connections a second for this tenant (limit 'rate'); try again shortly", limit="rate")
        try:
            addresses = await asyncio.wait_for(self._resolver.resolve(rec.host, rec.port), rules.connect_timeout_s)
        except (ResolveError, TimeoutError) as exc:
            raise Refused(502, "Bad Gateway", f"egress: cannot resolve {rec.host}", error="resolve") from exc
        for ip in addresses:
            kind = self._addresses.refusal(ip)
            if kind is not None:
                rec.address, rec.rule = str(ip), f"address:{kind}"
                # The kind is said, the address is not: a tenant should not map the host's network.
                raise Refused(403, "Forbidden", f"egress denied: {rec.host} resolves to a {kind} address")
        return await self._connect(addresses, rules, rec)

    async def _connect(self, addresses: list[IPAddress], rules: EgressRules, rec: ConnectionRecord) -> Side:
        last: Exception | None = None
        for ip in addresses:
            rec.address = str(ip)
            try:
                async with asyncio.timeout(rules.connect_timeout_s):
                    return await self._connector(str(ip), rec.port, Side)
            except (OSError, TimeoutError) as exc:
                last = exc
        rec.decision = "allow"
        raise Refused(502, "Bad Gateway", f"egress: cannot connect to {rec.host}:{rec.port}",
                      error=f"connect: {last.__class__.__name__ if last else 'no address'}")
