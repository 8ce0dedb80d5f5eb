"""The egress proxy against real local HTTP and HTTPS servers on loopback, driven by curl and urllib.

Every name resolves (through the test's resolver) to 127.0.0.x, and the proxy's connector refuses anything off
127.0.0.0/8, so nothing leaves the machine even if a check under test failed. The owner's private-target
exception covers 127.0.0.2 only (where the origins listen): 127.0.0.1 stands for the host's own ports.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fakes.origin import Origin, wait_records
from fakes.tls import make_tls

from policies.network import EgressRules
from toolrunner.egress import (
    AddressPolicy,
    Attribution,
    ConnectionRecord,
    EgressProxy,
    Identity,
    MemorySink,
    ProxyThread,
    splice,
)
from toolrunner.egress.proxy import open_tcp
from toolrunner.egress.relay import Side
from toolrunner.egress.resolver import StaticResolver, SystemResolver

ORIGIN_IP = "127.0.0.2"
NAMES = {
    "allowed.test": [ORIGIN_IP], "a.wild.test": [ORIGIN_IP], "secret.wild.test": [ORIGIN_IP],
    "unlisted.test": [ORIGIN_IP], "hostport.test": ["127.0.0.1"], "private.test": ["172.17.0.1"],
    "metadata.test": ["169.254.169.254"], "rebind.test": [ORIGIN_IP, "127.0.0.1"],
    "mapped.test": ["::ffff:127.0.0.1"],
}
RULES = EgressRules(allow=("allowed.test", "*.wild.test", "hostport.test", "private.test", "metadata.test",
                           "rebind.test", "mapped.test"), deny=("secret.wild.test",))
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


@dataclass
class Env:
    thread: ProxyThread
    sink: MemorySink
    rules: dict[str, EgressRules | None]
    http: Origin
    https: Origin
    ca_file: Path
    host_port: Origin
    dialled: list[str] = field(default_factory=list)

    def listen(self, tenant: str = "t1", session: str | None = "s1") -> str:
        host, port = self.thread.listen_tcp(Identity(tenant, session))
        return f"http://{host}:{port}"

    def wait_records(self, n: int) -> list[ConnectionRecord]:
        records = wait_records(self.sink, n)
        assert len(records) >= n, records
        return records


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    tls = make_tls("allowed.test", "a.wild.test", "secret.wild.test")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("".join(ssl.DER_cert_to_PEM_cert(der) for der in tls.client.get_ca_certs(binary_form=True)))
    http, https, host_port = Origin(ORIGIN_IP), Origin(ORIGIN_IP, tls.server), Origin("127.0.0.1")
    sink = MemorySink()
    rules: dict[str, EgressRules | None] = {"t1": RULES}
    dialled: list[str] = []

    async def loopback_only(address: str, port: int, factory: Callable[[], Side]) -> Side:
        dialled.append(address)
        assert ipaddress.ip_address(address) in LOOPBACK, f"test proxy asked to dial {address}"
        return await open_tcp(address, port, factory)

    proxy = EgressProxy(lambda tenant: rules.get(tenant), sink,
                        addresses=AddressPolicy.from_strings(["127.0.0.2/32", "169.254.0.0/16"]),
                        resolver=StaticResolver(NAMES), connector=loopback_only,
                        attribute=lambda ident, cred: Attribution(ident.session,
                                                                  f"{ident.session}:{cred}" if cred else None))
    thread = ProxyThread(proxy).start()
    yield Env(thread, sink, rules, http, https, ca_file, host_port, dialled)
    thread.stop()
    for origin in (http, https, host_port):
        origin.close()


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "20", "--noproxy", "", *args],
                          capture_output=True, text=True, timeout=30, check=False)


def test_allowed_name_over_http_with_curl_and_urllib(env: Env) -> None:
    """An allowed name is fetched through the proxy by curl and by urllib, the Host header is the checked
    name, and each attempt has an allow record with the rule, address, call id and bytes."""
    proxy = env.listen()
    out = curl("-x", proxy, "--proxy-user", "call-7:x", f"http://allowed.test:{env.http.port}/hello")
    assert out.returncode == 0 and out.stdout == f"hello allowed.test:{env.http.port}", out
    auth_proxy = proxy.replace("http://", "http://call-8:pw@")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": auth_proxy}))
    with opener.open(f"http://a.wild.test:{env.http.port}/hello", timeout=10) as resp:
        assert resp.read() == f"hello a.wild.test:{env.http.port}".encode()
    first, second = env.wait_records(2)
    assert (first.decision, first.rule, first.address, first.method) == ("allow", "allow:allowed.test", ORIGIN_IP,
                                                                         "GET")
    assert first.tenant == "t1" and first.session == "s1" and first.call_id == "s1:call-7"
    assert first.bytes_down > 100 and first.bytes_up > 20 and first.duration_ms > 0
    assert second.rule == "allow:*.wild.test" and second.call_id == "s1:call-8" and second.host == "a.wild.test"


def test_https_through_connect_is_not_intercepted(env: Env) -> None:
    """HTTPS goes through CONNECT: the client verifies the origin's own certificate for the name (the proxy
    holds no key), with curl and with urllib."""
    proxy = env.listen()
    out = curl("-x", proxy, "--cacert", str(env.ca_file), f"https://allowed.test:{env.https.port}/hello")
    assert out.returncode == 0 and out.stdout == f"hello allowed.test:{env.https.port}", out
    ctx = ssl.create_default_context(cafile=str(env.ca_file))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"https": proxy}),
                                         urllib.request.HTTPSHandler(context=ctx))
    with opener.open(f"https://a.wild.test:{env.https.port}/bytes/100000", timeout=10) as resp:
        assert len(resp.read()) == 100000
    recs = env.wait_records(2)
    assert [(r.method, r.decision, r.host) for r in recs] == [("CONNECT", "allow", "allowed.test"),
                                                              ("CONNECT", "allow", "a.wild.test")]
    assert recs[1].bytes_down > 100000


@pytest.mark.parametrize(("target", "rule"), [
    ("unlisted.test", "default"),
    ("secret.wild.test", "deny:secret.wild.test"),
])
def test_a_denied_name_is_refused_before_any_connection(env: Env, target: str, rule: str) -> None:
    """A name no rule allows, or one a deny rule names although a wildcard allows it, gets a 403 naming the
    rule (HTTP) or a failed CONNECT (HTTPS), and the origin never sees a connection."""
    proxy = env.listen()
    out = curl("-x", proxy, "-i", f"http://{target}:{env.http.port}/hello")
    assert "403" in out.stdout.splitlines()[0] and f"X-Egress-Rule: {rule}" in out.stdout, out
    tls = curl("-x", proxy, "--cacert", str(env.ca_file), f"https://{target}:{env.https.port}/hello")
    assert tls.returncode != 0 and "403" in tls.stderr, tls
    recs = env.wait_records(2)
    assert all(r.decision == "deny" and r.rule == rule and r.address is None for r in recs)
    assert env.http.accepted == 0 and env.https.accepted == 0 and env.dialled == []


def test_ip_literals_are_refused(env: Env) -> None:
    """An address in place of a name (dotted, bracketed IPv6, or a numeric form) is refused as ip-literal,
    even though the owner's exception covers that address."""
    proxy = env.listen()
    for target in (f"{ORIGIN_IP}:{env.http.port}", f"[::1]:{env.http.port}", f"2130706434:{env.http.port}"):
        out = curl("-x", proxy, "-i", f"http://{target}/hello")
        assert "403" in out.stdout.splitlines()[0], (target, out)
    out = curl("-x", proxy, "-p", "--cacert", str(env.ca_file), f"https://{ORIGIN_IP}:{env.https.port}/")
    assert out.returncode != 0
    recs = env.wait_records(4)
    assert [r.rule for r in recs] == ["ip-literal"] * 4 and env.http.accepted == env.https.accepted == 0


@pytest.mark.parametrize(("name", "kind"), [
    ("hostport.test", "loopback"),
    ("private.test", "private"),
    ("metadata.test", "metadata"),
    ("rebind.test", "loopback"),
    ("mapped.test", "loopback"),
])
def test_names_resolving_to_forbidden_addresses_are_refused(env: Env, name: str, kind: str) -> None:
    """An allowed name whose address is the host's loopback (its own ports), a private network, the metadata
    address (even inside the owner's link-local exception), or a mix of good and bad answers, is refused by
    kind without naming the address to the client; the record keeps the address; nothing was dialled."""
    proxy = env.listen()
    out = curl("-x", proxy, "-i", f"http://{name}:{env.host_port.port}/hello")
    assert "403" in out.stdout.splitlines()[0] and f"resolves to a {kind} address" in out.stdout, out
    assert "127.0.0.1" not in out.stdout and "169.254" not in out.stdout
    (rec,) = env.wait_records(1)
    assert rec.decision == "deny" and rec.rule == f"address:{kind}" and rec.address is not None
    assert env.dialled == [] and env.host_port.accepted == 0


def test_the_system_resolver_refuses_localhost(env: Env) -> None:
    """With the real resolver and no owner exception, localhost is refused as loopback."""
    sink = MemorySink()
    proxy = EgressProxy(lambda _t: EgressRules(allow=("localhost",)), sink, resolver=SystemResolver())
    thread = ProxyThread(proxy).start()
    try:
        host, port = thread.listen_tcp(Identity("t2"))
        out = curl("-x", f"http://{host}:{port}", "-i", f"http://localhost:{env.host_port.port}/hello")
        assert "403" in out.stdout.splitlines()[0]
        assert wait_records(sink, 1)[0].rule == "address:loopback" and env.host_port.accepted == 0
    finally:
        thread.stop()


def test_a_tenant_without_an_allowlist_gets_nothing(env: Env) -> None:
    """A tenant whose policy is not allowlist (rules None) is refused whatever it asks for."""
    env.rules["t3"] = None
    out = curl("-x", env.listen("t3"), "-i", f"http://allowed.test:{env.http.port}/hello")
    assert "403" in out.stdout.splitlines()[0]
    assert env.wait_records(1)[0].rule == "mode" and env.http.accepted == 0


def _connect(proxy: str, target: str) -> socket.socket:
    host, port = proxy.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    return sock


def _status(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


def test_connection_limit_refuses_the_next_and_recovers(env: Env) -> None:
    """With two connections allowed, a third gets 429 naming the limit while two are open, and passes once one
    has closed; the limit is per tenant, not per listener."""
    env.rules["t4"] = EgressRules(allow=("allowed.test",), max_connections=2)
    proxies = [env.listen("t4", "a"), env.listen("t4", "b")]
    target = f"allowed.test:{env.http.port}"
    held = [_connect(proxies[0], target), _connect(proxies[1], target)]
    assert [_status(s) for s in held] == [b"HTTP/1.1 200 Connection Established"] * 2
    third = _connect(proxies[0], target)
    assert _status(third).startswith(b"HTTP/1.1 429")
    third.close()
    held.pop().close()
    deadline = time.monotonic() + 10
    while env.thread.proxy.open_connections("t4") > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    again = _connect(proxies[1], target)
    assert _status(again) == b"HTTP/1.1 200 Connection Established"
    for s in (again, *held):
        s.close()
    recs = env.wait_records(4)
    assert [r.limit for r in recs if r.limit] == ["connections"]


def test_new_connections_a_second_are_bounded_per_tenant(env: Env) -> None:
    """Over connections_per_s (a burst of max_connections) the next connection gets 429 naming the limit
    'rate', though none is open; another tenant is untouched; the budget refills with time."""
    env.rules["t6"] = EgressRules(allow=("allowed.test",), max_connections=3, connections_per_s=1)
    env.rules["t7"] = EgressRules(allow=("allowed.test",), max_connections=3, connections_per_s=1)
    url = f"http://allowed.test:{env.http.port}/hello"
    mine, other = env.listen("t6"), env.listen("t7")
    burst = [curl("-x", mine, url) for _ in range(3)]  # one at a time: never more than one open
    over = curl("-i", "-x", mine, url)
    beside = curl("-x", other, url)
    deadline = time.monotonic() + 10
    while (again := curl("-x", mine, url)).stdout != f"hello allowed.test:{env.http.port}" and (
            time.monotonic() < deadline):
        time.sleep(0.2)  # the budget refills at one a second: poll it, bounded
    assert [b.stdout for b in burst] == [f"hello allowed.test:{env.http.port}"] * 3, burst
    assert over.stdout.startswith("HTTP/1.1 429") and "X-Egress-Rule: rate" in over.stdout, over.stdout
    assert "limit 'rate'" in over.stdout
    assert beside.stdout == again.stdout == f"hello allowed.test:{env.http.port}", (beside, again)
    records = env.wait_records(6)
    rate = [r for r in records if r.limit == "rate"]
    assert rate and all(r.tenant == "t6" and r.decision == "deny" for r in rate)
    assert sum(r.decision == "allow" and r.tenant == "t6" for r in records) >= 4


def test_connections_without_a_request_are_bounded_per_tenant(env: Env) -> None:
    """Past max_headless connections of a tenant that have not sent their request head, the next is refused at
    once with 429 naming the limit (not held for the head timeout); another tenant is served meanwhile, and the
    tenant again once the silent ones left."""
    sink = MemorySink()
    proxy = EgressProxy(lambda _t: RULES, sink, addresses=AddressPolicy.from_strings([f"{ORIGIN_IP}/32"]),
                        resolver=StaticResolver(NAMES), max_headless=2)
    thread = ProxyThread(proxy).start()
    url = f"http://allowed.test:{env.http.port}/hello"
    try:
        mine = [thread.listen_tcp(Identity("t1")), thread.listen_tcp(Identity("t1"))]
        other = "http://{}:{}".format(*thread.listen_tcp(Identity("t2")))
        silent = [socket.create_connection(address, timeout=10) for address in mine]
        deadline = time.monotonic() + 10
        while proxy.headless_connections("t1") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        over = _connect("http://{}:{}".format(*mine[0]), f"allowed.test:{env.http.port}")
        refused = _status(over)
        over.close()
        served = curl("-x", other, url)
        for sock in silent:
            sock.close()
        while proxy.headless_connections("t1") and time.monotonic() < deadline:
            time.sleep(0.01)
        again = curl("-x", "http://{}:{}".format(*mine[1]), url)
        records = wait_records(sink, 3)
    finally:
        thread.stop()
    assert refused.startswith(b"HTTP/1.1 429"), refused
    assert served.stdout == again.stdout == f"hello allowed.test:{env.http.port}", (served, again)
    assert sorted((r.tenant, r.decision, r.limit) for r in records) == [
        ("t1", "allow", None), ("t1", "deny", "connections"), ("t2", "allow", None)]


def test_duration_limit_ends_a_long_connection(env: Env) -> None:
    """A tunnel open longer than max_connection_s is closed by the proxy and its record says 'duration'."""
    env.rules["t5"] = EgressRules(allow=("allowed.test",), max_connection_s=0.5)
    sock = _connect(env.listen("t5"), f"allowed.test:{env.http.port}")
    assert _status(sock) == b"HTTP/1.1 200 Connection Established"
    sock.sendall(b"GET /hold HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
    started = time.monotonic()
    while sock.recv(65536):
        pass
    assert 0.3 < time.monotonic() - started < 5
    (rec,) = env.wait_records(1)
    assert rec.limit == "duration" and rec.decision == "allow" and 400 < rec.duration_ms < 5000


def test_bandwidth_limit_slows_a_download(env: Env) -> None:
    """At 4000 kbit/s (500 kB/s, one second of burst) 1.5 MB takes about two seconds, and the record says how
    long the proxy held it back."""
    env.rules["t6"] = EgressRules(allow=("allowed.test",), bandwidth_kbps=4000)
    started = time.monotonic()
    out = curl("-x", env.listen("t6"), "-o", "/dev/null", "-w", "%{size_download}",
               f"http://allowed.test:{env.http.port}/bytes/1500000")
    took = time.monotonic() - started
    assert out.stdout == "1500000" and 1.6 < took < 6, (out, took)
    (rec,) = env.wait_records(1)
    assert rec.throttled_ms > 1000 and rec.bytes_down > 1500000


def test_unix_socket_listener_carries_its_session(env: Env, tmp_path: Path) -> None:
    """A per-session Unix socket attributes its connections to that tenant and session, whatever the client
    sends; a bad request head on it is refused with 400 and still recorded."""
    path = str(tmp_path / "egress.sock")
    env.thread.listen_unix(Identity("t1", "session-42"), path)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        sock.sendall(f"CONNECT allowed.test:{env.http.port} HTTP/1.1\r\n\r\n".encode())
        assert _status(sock) == b"HTTP/1.1 200 Connection Established"
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
        body = b""
        while chunk := sock.recv(4096):
            body += chunk
    assert body.endswith(b"hello allowed.test")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        sock.sendall(b"GET /relative HTTP/1.1\r\n\r\n")
        assert _status(sock).startswith(b"HTTP/1.1 400")
    first, second = sorted(env.wait_records(2), key=lambda r: r.decision)  # order of completion varies
    assert (first.tenant, first.session, first.decision) == ("t1", "session-42", "allow")
    assert (second.session, second.rule, second.decision) == ("session-42", "bad-request", "deny")


def test_every_attempt_has_exactly_one_record(env: Env) -> None:
    """A mixed run of allowed, denied and malformed attempts gives one record per attempt, in order."""
    proxy = env.listen()
    targets: list[tuple[str, Callable[[], object]]] = [
        ("allow", lambda: curl("-x", proxy, f"http://allowed.test:{env.http.port}/hello")),
        ("deny", lambda: curl("-x", proxy, f"http://unlisted.test:{env.http.port}/hello")),
        ("deny", lambda: curl("-x", proxy, f"http://{ORIGIN_IP}:{env.http.port}/hello")),
        ("allow", lambda: curl("-x", proxy, f"http://a.wild.test:{env.http.port}/bytes/10")),
    ]
    for _, run in targets:
        run()
    recs = env.wait_records(len(targets))
    assert [r.decision for r in recs] == [d for d, _ in targets] and len(env.sink.records) == len(targets)


def test_unreachable_upstream_is_a_502_with_the_error(env: Env) -> None:
    """An allowed name whose origin is not listening answers 502 and the record says the connect failed."""
    closed = socket.socket()
    closed.bind((ORIGIN_IP, 0))
    port = closed.getsockname()[1]
    closed.close()
    out = curl("-x", env.listen(), "-i", f"http://allowed.test:{port}/hello")
    assert "502" in out.stdout.splitlines()[0]
    (rec,) = env.wait_records(1)
    assert rec.error == "connect: ConnectionRefusedError" and rec.address == ORIGIN_IP


def test_urllib_sees_a_clear_refusal(env: Env) -> None:
    """urllib through the proxy gets an HTTPError 403 whose body says why."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": env.listen()}))
    with pytest.raises(urllib.error.HTTPError) as info:
        opener.open(f"http://unlisted.test:{env.http.port}/", timeout=10)
    assert info.value.code == 403
    assert b"not allowed by this tenant's rules" in info.value.read()


@pytest.fixture(params=["splice-threads", "splice-loop", "protocol"])
def relay_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every way of moving a tunnel's bytes: splice(2) pumped by a thread per direction, splice(2) driven by the
    event loop (under a bandwidth limit or past the thread cap), and the protocol relay used where splice
    cannot start."""
    if request.param == "protocol":
        monkeypatch.setattr(splice, "AVAILABLE", False)
    if request.param == "splice-loop":
        monkeypatch.setattr(splice, "MAX_THREADED", 0)
    return str(request.param)


def test_both_relays_carry_tls_and_bulk_data(env: Env, relay_mode: str) -> None:
    """HTTPS and a 5 MB download arrive whole through either relay, and the byte counts match."""
    proxy = env.listen()
    out = curl("-x", proxy, "--cacert", str(env.ca_file), "-o", "/dev/null", "-w", "%{size_download}",
               f"https://allowed.test:{env.https.port}/bytes/5000000")
    assert out.returncode == 0 and out.stdout == "5000000", out
    (rec,) = env.wait_records(1)
    assert 5_000_000 < rec.bytes_down < 5_100_000 and rec.decision == "allow" and rec.limit is None


def test_an_upstream_that_speaks_first_is_relayed(env: Env, relay_mode: str) -> None:
    """A server that sends a banner as soon as it is connected (SSH, SMTP) loses nothing: the banner reaches
    the client after the 200, then an echo round trip works, through either relay."""
    listener = socket.create_server((ORIGIN_IP, 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"220 banner\r\n")
            while data := conn.recv(4096):
                conn.sendall(data.upper())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    sock = _connect(env.listen(), f"allowed.test:{port}")
    data = b""
    while b"220 banner\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    assert data.startswith(b"HTTP/1.1 200 Connection Established\r\n\r\n220 banner")
    sock.sendall(b"ping")
    got = b""
    while len(got) < 4:
        got += sock.recv(4096)
    assert got == b"PING"
    sock.shutdown(socket.SHUT_WR)
    assert sock.recv(4096) == b""
    sock.close()
    thread.join(10)
    listener.close()
    (rec,) = env.wait_records(1)
    assert rec.bytes_up == 4 and rec.bytes_down == len(b"220 banner\r\nPING")


def _echo_once(data: bytes, answer: bytes | None = None) -> tuple[int, threading.Thread, socket.socket]:
    """An origin on ORIGIN_IP that reads ``len(data)`` bytes, answers ``answer`` (default: them upper-cased)
    and closes."""
    listener = socket.create_server((ORIGIN_IP, 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            got = b""
            while len(got) < len(data) and (chunk := conn.recv(65536)):
                got += chunk
            conn.sendall(got.upper() if answer is None else answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread, listener


def _tunnel_with_payload(proxy: str, port: int, payload: bytes) -> bytes:
    """CONNECT and ``payload`` in one write (so the proxy reads them together); everything the client gets."""
    host, proxy_port = proxy.removeprefix("http://").split(":")
    with socket.create_connection((host, int(proxy_port)), timeout=10) as sock:
        sock.sendall(f"CONNECT allowed.test:{port} HTTP/1.1\r\n\r\n".encode() + payload)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_bytes_sent_with_the_head_are_counted(env: Env, relay_mode: str) -> None:
    """Bytes a client sends behind its CONNECT head in the same write reach the origin and count in bytes_up,
    through every relay: a tunnel cannot carry them unrecorded."""
    payload = b"x" * 20_000
    port, thread, listener = _echo_once(payload)
    data = _tunnel_with_payload(env.listen(), port, payload)
    thread.join(10)
    listener.close()
    assert data.endswith(payload.upper()), data[:200]
    (rec,) = env.wait_records(1)
    assert rec.bytes_up == len(payload) and rec.bytes_down == len(payload)


def test_bytes_sent_with_the_head_pass_the_bandwidth_bucket(env: Env) -> None:
    """At 400 kbit/s (50 kB/s, one second of burst) 100 kB sent with the head (one read) are held back about a
    second: a new connection per burst does not lift the tenant's bandwidth limit."""
    env.rules["t9"] = EgressRules(allow=("allowed.test",), bandwidth_kbps=400)
    payload = b"x" * 100_000
    port, thread, listener = _echo_once(payload, b"ok")
    data = _tunnel_with_payload(env.listen("t9"), port, payload)
    thread.join(10)
    listener.close()
    assert data.endswith(b"\r\n\r\nok"), data
    (rec,) = env.wait_records(1)
    assert rec.throttled_ms > 500 and rec.bytes_up == len(payload)


def test_a_bandwidth_below_one_read_still_flows(env: Env) -> None:
    """At 80 kbit/s (10 kB/s, less than the loop-driven splice's smallest read) a tunnel's 15 kB arrive,
    throttled, instead of stalling until the connection's time limit."""
    env.rules["t10"] = EgressRules(allow=("allowed.test",), bandwidth_kbps=80)
    answer = b"y" * 15_000
    port, thread, listener = _echo_once(b"hi", answer)
    data = _tunnel_with_payload(env.listen("t10"), port, b"hi")
    thread.join(10)
    listener.close()
    assert data.endswith(b"\r\n\r\n" + answer), len(data)
    (rec,) = env.wait_records(1)
    assert rec.bytes_down == len(answer) and rec.throttled_ms > 200


def test_a_silent_connection_is_not_an_attempt(env: Env) -> None:
    """Connecting and leaving without a byte (a readiness probe) leaves no record; leaving in the middle of a
    request head is a bad request, recorded."""
    proxy = env.listen()
    host, port = proxy.removeprefix("http://").split(":")
    socket.create_connection((host, int(port)), timeout=5).close()
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"CONNECT allowed.test:443 HTTP/1.1\r\n")
    (rec,) = env.wait_records(1)
    assert rec.rule == "bad-request" and rec.decision == "deny"
    out = curl("-x", proxy, f"http://allowed.test:{env.http.port}/hello")
    assert out.returncode == 0
    assert [r.rule for r in env.wait_records(2)] == ["bad-request", "allow:allowed.test"]


def test_a_rebinding_name_is_checked_at_every_connection(env: Env) -> None:
    """A name that answers a permitted address first and the host's loopback next is resolved once per
    connection and checked each time: the first connection goes to the address that was checked, the second is
    refused, and nothing is ever dialled but the checked address."""
    answers = iter([[ORIGIN_IP], ["127.0.0.1"]])

    class Flipping:
        async def resolve(self, host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
            return [ipaddress.ip_address(a) for a in next(answers)]

    sink = MemorySink()
    proxy = EgressProxy(lambda _t: EgressRules(allow=("rebind.test",)), sink,
                        addresses=AddressPolicy.from_strings([f"{ORIGIN_IP}/32"]), resolver=Flipping())
    thread = ProxyThread(proxy).start()
    try:
        host, port = thread.listen_tcp(Identity("t1"))
        first = curl("-x", f"http://{host}:{port}", f"http://rebind.test:{env.http.port}/hello")
        second = curl("-x", f"http://{host}:{port}", "-i", f"http://rebind.test:{env.host_port.port}/hello")
    finally:
        thread.stop()
    assert first.stdout == f"hello rebind.test:{env.http.port}" and "403" in second.stdout.splitlines()[0]
    assert [(r.decision, r.address, r.rule) for r in sink.records] == [
        ("allow", ORIGIN_IP, "allow:rebind.test"), ("deny", "127.0.0.1", "address:loopback")]
    assert env.host_port.accepted == 0


def test_a_held_audit_log_refuses_new_connections(env: Env) -> None:
    """While the host says records cannot be kept (the audit log's backlog or a failed write), a new connection
    gets 503 with the limit named, and nothing is dialled; when it clears, connections pass again."""
    held: list[str | None] = ["audit"]
    sink = MemorySink()
    proxy = EgressProxy(lambda _t: RULES, sink, addresses=AddressPolicy.from_strings([f"{ORIGIN_IP}/32"]),
                        resolver=StaticResolver(NAMES), admit=lambda _tenant: held[0])
    thread = ProxyThread(proxy).start()
    try:
        host, port = thread.listen_tcp(Identity("t1"))
        refused = curl("-x", f"http://{host}:{port}", "-i", f"http://allowed.test:{env.http.port}/hello")
        held[0] = None
        passed = curl("-x", f"http://{host}:{port}", f"http://allowed.test:{env.http.port}/hello")
        records = wait_records(sink, 2)
    finally:
        thread.stop()
    assert refused.stdout.startswith("HTTP/1.1 503") and "X-Egress-Rule: audit" in refused.stdout, refused
    assert passed.stdout == f"hello allowed.test:{env.http.port}"
    assert [(r.decision, r.limit) for r in records] == [("deny", "audit"), ("allow", None)]
    assert env.http.accepted == 1
