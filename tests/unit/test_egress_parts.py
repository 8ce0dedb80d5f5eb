"""The egress proxy's parts on their own: the request head it forwards, the address kinds it refuses, the bucket."""

from __future__ import annotations

import base64
import ipaddress
import time

import pytest

import toolrunner.egress as egress
from toolrunner.egress import Attribution, CredentialRegistry, Identity, SessionKeys
from toolrunner.egress.addresses import AddressPolicy, address_kind
from toolrunner.egress.credentials import first_attribution
from toolrunner.egress.httphead import BadRequest, parse_head
from toolrunner.egress.limits import TokenBucket
from toolrunner.runner.egress_env import session_credential, session_proxy_env


def test_public_names_match_all() -> None:
    """The package exports exactly what __all__ lists."""
    exported = {n for n in dir(egress) if n[0].isupper()} | {"address_kind"}
    assert sorted(egress.__all__) == sorted(exported)


def test_connect_head() -> None:
    """CONNECT gives host, port and the credential's user name, and nothing to forward."""
    cred = base64.b64encode(b"call-1:secret").decode()
    req = parse_head(f"CONNECT pypi.org:443 HTTP/1.1\r\nProxy-Authorization: Basic {cred}\r\n\r\n".encode())
    assert (req.method, req.host, req.port, req.credential, req.upstream_head) == ("CONNECT", "pypi.org", 443,
                                                                                  "call-1", b"")
    assert parse_head(b"CONNECT [::1]:8443 HTTP/1.1\r\n\r\n").host == "::1"


def test_http_head_is_rewritten_for_the_origin() -> None:
    """An absolute URL becomes origin form; Proxy-* and Connection go, Host is the checked name, and the
    connection closes after one request."""
    head = (b"GET http://Example.org:8080/a/b?q=1 HTTP/1.1\r\nHost: evil.test\r\nProxy-Authorization: Basic eDp5\r\n"
            b"Proxy-Connection: keep-alive\r\nConnection: keep-alive\r\nAccept: */*\r\n\r\n")
    req = parse_head(head)
    assert (req.host, req.port, req.credential) == ("example.org", 8080, "x")
    lines = req.upstream_head.decode().split("\r\n")
    assert lines[0] == "GET /a/b?q=1 HTTP/1.1" and "Host: Example.org:8080" in lines
    assert "Accept: */*" in lines and "Connection: close" in lines
    assert not any(line.lower().startswith(("proxy-", "connection: keep")) for line in lines)
    assert "evil.test" not in req.upstream_head.decode()


@pytest.mark.parametrize("head", [
    b"GET /relative HTTP/1.1\r\n\r\n",
    b"GET https://x.org/ HTTP/1.1\r\n\r\n",
    b"GET ftp://x.org/ HTTP/1.1\r\n\r\n",
    b"CONNECT x.org HTTP/1.1\r\n\r\n",
    b"CONNECT x.org:99999 HTTP/1.1\r\n\r\n",
    b"CONNECT x.org:443 HTTP/2\r\n\r\n",
    b"CONNECT x.org:443 HTTP/1.1\r\n bad\r\n\r\n",
    b"\xff\xfe HTTP/1.1\r\n\r\n",
])
def test_bad_heads_are_refused(head: bytes) -> None:
    """Anything but CONNECT host:port or an absolute http URL over HTTP/1.x is a BadRequest."""
    with pytest.raises(BadRequest):
        parse_head(head)


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("10.1.2.3", "private"), ("172.17.0.1", "private"), ("192.168.1.1", "private"),
    ("169.254.169.254", "metadata"), ("169.254.1.1", "link-local"), ("100.64.0.1", "shared (CGNAT)"),
    ("0.0.0.0", "unspecified"), ("224.0.0.1", "multicast"), ("255.255.255.255", "reserved"),
    ("::1", "loopback"), ("fe80::1", "link-local"), ("fd00::1", "unique local"), ("::ffff:10.0.0.1", "private"),
    ("64:ff9b::7f00:1", "loopback"), ("2002:a00:1::", "private"), ("fd00:ec2::254", "metadata"),
    ("8.8.8.8", None), ("2606:4700::1111", None),
])
def test_address_kinds(address: str, kind: str | None) -> None:
    """Every non-public range has a kind (IPv4 inside IPv6 judged by the IPv4 address); public ones have none."""
    assert address_kind(ipaddress.ip_address(address)) == kind


def test_owner_exception_never_covers_metadata() -> None:
    """The owner's private networks lift the address rule inside them, except for the metadata address."""
    policy = AddressPolicy.from_strings(["169.254.0.0/16", "10.0.0.0/8"])
    assert policy.refusal(ipaddress.ip_address("10.9.9.9")) is None
    assert policy.refusal(ipaddress.ip_address("169.254.1.1")) is None
    assert policy.refusal(ipaddress.ip_address("169.254.169.254")) == "metadata"
    assert policy.refusal(ipaddress.ip_address("::ffff:169.254.169.254")) == "metadata"
    assert AddressPolicy().refusal(ipaddress.ip_address("10.9.9.9")) == "private"


def test_host_interface_addresses_are_refused() -> None:
    """A public-looking address that belongs to this host is still the host: refused as 'host'."""
    policy = AddressPolicy()
    policy._local, policy._local_at = frozenset({ipaddress.ip_address("8.8.4.4")}), time.monotonic()
    assert policy.refusal(ipaddress.ip_address("8.8.4.4")) == "host"
    assert policy.refusal(ipaddress.ip_address("8.8.8.8")) is None


def test_token_bucket_holds_the_rate() -> None:
    """After its one-second burst, the bucket asks for pauses that hold `rate` bytes per second."""
    bucket = TokenBucket(rate=200_000)
    assert bucket.spend(100_000) == 0 and bucket.spend(100_000) == 0
    debt = bucket.spend(400_000)
    assert 1.9 < debt <= 2.0, debt


def test_session_keys_attribute_sessions_and_their_one_call() -> None:
    """A credential the runner derives (forward.session_credential) names its session; the call is the
    session's only call in flight; a forged MAC, another tenant's key, or a retired key names nothing."""
    keys = SessionKeys()
    key_a, key_b = keys.new_key("tenant-a"), keys.new_key("tenant-b")
    cred = session_credential(key_a, "ses_1")
    a = Identity("tenant-a")
    assert keys.attribute(a, cred) == Attribution("ses_1", None)
    keys.begin_call("tenant-a", "ses_1", "call-1")
    assert keys.attribute(a, cred) == Attribution("ses_1", "call-1")
    keys.begin_call("tenant-a", "ses_1", "call-2")
    assert keys.attribute(a, cred) == Attribution("ses_1", None)  # two at once: only the session is sure
    keys.end_call("tenant-a", "ses_1", "call-1")
    assert keys.attribute(a, cred) == Attribution("ses_1", "call-2")
    keys.end_call("tenant-a", "ses_1", "call-2")
    assert keys.attribute(a, cred) == Attribution("ses_1", None)  # a background process after its call
    forged = cred[:-2] + ("AA" if not cred.endswith("AA") else "BB")
    truncated = session_credential(key_a, "ses_2")[:-1]
    for bad in (None, "", "ses_1", forged, session_credential(key_b, "ses_1"), truncated):
        assert keys.attribute(a, bad) is None, bad
    assert keys.attribute(Identity("tenant-b"), cred) is None
    keys.new_key("tenant-a")  # a new container: the old one's credentials stop working
    assert keys.attribute(a, cred) is None
    keys.forget("tenant-b")
    assert keys.attribute(Identity("tenant-b"), session_credential(key_b, "ses_9")) is None


def test_session_proxy_env_carries_the_derived_credential() -> None:
    """The runner's session environment points every proxy variable at the forwarder with the credential."""
    env = session_proxy_env(b"k" * 32, "ses_1")
    assert env["https_proxy"] == f"http://{session_credential(b'k' * 32, 'ses_1')}:x@127.0.0.1:3128"
    assert env["NO_PROXY"] == "" and len(env) == 6


def test_first_attribution_tries_each_source() -> None:
    """Session credentials and per-call tokens on one proxy: each is recognised by its own registry."""
    keys, registry = SessionKeys(), CredentialRegistry()
    key = keys.new_key("t")
    token = registry.issue("t", "ses_web", "call-web")
    attribute = first_attribution(keys.attribute, registry.attribute)
    assert attribute(Identity("t"), session_credential(key, "ses_1")) == Attribution("ses_1", None)
    assert attribute(Identity("t"), token) == Attribution("ses_web", "call-web")
    assert attribute(Identity("t"), "nothing") is None
