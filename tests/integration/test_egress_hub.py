"""Per-tenant sockets and per-call credentials: the pieces the manager and runner will use for attribution."""

from __future__ import annotations

import base64
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.origin import Origin, wait_records

from policies.network import EgressRules
from toolrunner.egress import (
    AddressPolicy,
    CredentialRegistry,
    EgressHub,
    EgressProxy,
    MemorySink,
    StaticResolver,
)

ORIGIN_IP = "127.0.0.2"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[EgressHub, CredentialRegistry, MemorySink, Origin]]:
    origin = Origin(ORIGIN_IP)
    sink, registry = MemorySink(), CredentialRegistry()
    proxy = EgressProxy(lambda _t: EgressRules(allow=("allowed.test",)), sink,
                        addresses=AddressPolicy.from_strings([f"{ORIGIN_IP}/32"]),
                        resolver=StaticResolver({"allowed.test": [ORIGIN_IP]}), attribute=registry.attribute)
    egress_hub = EgressHub(proxy, tmp_path / "egress")
    yield egress_hub, registry, sink, origin
    egress_hub.stop()
    origin.close()


def _get(sock_dir: Path, port: int, token: str | None) -> bytes:
    """A plain-HTTP GET for allowed.test through the tenant's socket, with ``token`` as the credential."""
    auth = f"Proxy-Authorization: Basic {base64.b64encode(f'{token}:x'.encode()).decode()}\r\n" if token else ""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(sock_dir / "proxy.sock"))
        sock.sendall(f"GET http://allowed.test:{port}/hello HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_tokens_attribute_calls_and_sessions_and_never_cross_tenants(
        hub: tuple[EgressHub, CredentialRegistry, MemorySink, Origin]) -> None:
    """A call's token names its session and call; after the call, only the session; after the session, nothing
    (407). No token, a made-up token, or another tenant's token on this tenant's socket: 407."""
    egress_hub, registry, sink, origin = hub

    def get(sock_dir: Path, port: int, token: str | None) -> bytes:
        """``_get``, then its record: the proxy records a connection when it sees the close, so the next
        request's record could otherwise come first."""
        before = len(sink.records)
        reply = _get(sock_dir, port, token)
        wait_records(sink, before + 1)
        return reply

    a_dir, b_dir = egress_hub.ensure("tenant-a"), egress_hub.ensure("tenant-b")
    token = registry.issue("tenant-a", "sess-1", "call-1")
    other = registry.issue("tenant-b", "sess-9", "call-9")
    assert get(a_dir, origin.port, token).endswith(b"hello allowed.test:" + str(origin.port).encode())
    registry.end_call(token)
    assert get(a_dir, origin.port, token).startswith(b"HTTP/1.1 200")
    for bad in (None, "made-up", other):
        reply = get(a_dir, origin.port, bad)
        assert reply.startswith(b"HTTP/1.1 407") and b'Proxy-Authenticate: Basic realm="openanalyst-egress"' in reply
    assert get(b_dir, origin.port, other).startswith(b"HTTP/1.1 200")
    registry.end_session("tenant-a", "sess-1")
    assert get(a_dir, origin.port, token).startswith(b"HTTP/1.1 407")
    recs = wait_records(sink, 7)
    assert [(r.tenant, r.session, r.call_id, r.decision) for r in recs] == [
        ("tenant-a", "sess-1", "call-1", "allow"), ("tenant-a", "sess-1", None, "allow"),
        ("tenant-a", None, None, "deny"), ("tenant-a", None, None, "deny"), ("tenant-a", None, None, "deny"),
        ("tenant-b", "sess-9", "call-9", "allow"), ("tenant-a", None, None, "deny")]
    assert {r.rule for r in recs if r.decision == "deny"} == {"credential"}
    assert len(registry) == 1  # tenant-b's token is still live


def test_socket_directories_are_per_tenant_and_released(
        hub: tuple[EgressHub, CredentialRegistry, MemorySink, Origin]) -> None:
    """Each tenant gets its own directory (a hash, not the id), the root cannot be listed by others, ensure is
    idempotent, and release closes the socket and removes the directory."""
    egress_hub, registry, _sink, origin = hub
    a_dir = egress_hub.ensure("tenant-a/../../x")
    assert a_dir.parent == egress_hub.root and "/" not in a_dir.name and len(a_dir.name) == 24
    assert egress_hub.ensure("tenant-a/../../x") == a_dir and egress_hub.tenants() == ["tenant-a/../../x"]
    assert stat.S_IMODE(egress_hub.root.stat().st_mode) == 0o711
    assert stat.S_ISSOCK((a_dir / "proxy.sock").stat().st_mode)
    token = registry.issue("tenant-a/../../x", "s", "c")
    assert _get(a_dir, origin.port, token).startswith(b"HTTP/1.1 200")
    egress_hub.release("tenant-a/../../x")
    assert not a_dir.exists() and egress_hub.tenants() == []
    with pytest.raises(OSError), socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(a_dir / "proxy.sock"))


def test_a_socket_directory_too_long_for_unix_sockets_is_refused(tmp_path: Path) -> None:
    """A root whose sockets' paths would pass the 107-byte limit is refused when the hub is made, saying so."""
    proxy = EgressProxy(lambda _t: None, MemorySink())
    with pytest.raises(ValueError, match="too long"):
        EgressHub(proxy, Path("/tmp") / ("x" * 80))
    assert EgressHub(proxy, Path("/tmp/oa")).root == Path("/tmp/oa")
