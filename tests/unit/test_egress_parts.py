"""The egress proxy's parts on their own: the request head it forwards, the address kinds it refuses, the bucket."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import time

import pytest

import toolrunner.egress as egress
from toolrunner.egress import Attribution, CredentialRegistry, Identity, SessionKeys
from toolrunner.egress.addresses import AddressPolicy, address_kind
from toolrunner.egress.credentials import first_attribution
from toolrunner.egress.httphead import BadRequest, parse_head
from toolrunner.egress.limits import TokenBucket
from toolrunner.runner.egress_env import call_credential, call_proxy_env, parse_credential


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


def test_session_keys_name_the_call_of_the_credential() -> None:
    """A credential the runner derives for a call (egress_env.call_credential) names that session and that call,
    while it runs and after it ended, and whichever other calls of the session run meanwhile."""
    keys = SessionKeys()
    key = keys.new_key("tenant-a")
    a = Identity("tenant-a")
    one, two = call_credential(key, "ses_1", "call-1"), call_credential(key, "ses_1", "call-2")
    assert one is not None and two is not None and one != two
    assert keys.attribute(a, one) is None  # not begun yet
    keys.begin_call("tenant-a", "ses_1", "call-1")
    assert keys.attribute(a, one) == Attribution("ses_1", "call-1")
    keys.begin_call("tenant-a", "ses_1", "call-2")
    # call 1's process (a leftover background job) connecting while call 2 runs is call 1's, and call 2's its own
    assert keys.attribute(a, one) == Attribution("ses_1", "call-1")
    assert keys.attribute(a, two) == Attribution("ses_1", "call-2")


def test_session_keys_refuse_forged_and_foreign_credentials() -> None:
    """A wrong MAC, another tenant's key, another session's call named with this session, a call id never
    begun, a non-canonical spelling, a retired key, the old session-only credential: each names nothing."""
    keys = SessionKeys()
    key_a, key_b = keys.new_key("tenant-a"), keys.new_key("tenant-b")
    a = Identity("tenant-a")
    keys.begin_call("tenant-a", "ses_1", "call-1")
    keys.begin_call("tenant-a", "ses_2", "call-9")
    keys.begin_call("tenant-b", "ses_1", "call-1")
    cred = call_credential(key_a, "ses_1", "call-1")
    assert cred is not None and keys.attribute(a, cred) == Attribution("ses_1", "call-1")
    session, call, mac = cred.split(".")
    forged = f"{session}.{call}.{'A' * 22 if mac != 'A' * 22 else 'B' * 22}"
    old_mac = base64.urlsafe_b64encode(hmac.new(key_a, b"ses_1", hashlib.sha256).digest()[:16]).decode().rstrip("=")
    plain_b64 = "~" + base64.urlsafe_b64encode(b"ses_1").decode().rstrip("=")
    for bad in (None, "", "ses_1", forged, cred[:-1], cred + "A", f"{session}.{old_mac}",  # the old form
                call_credential(key_b, "ses_1", "call-1"),  # tenant-b's key on tenant-a's socket
                call_credential(key_a, "ses_1", "call-9"),  # ses_2's call, claimed by ses_1
                call_credential(key_a, "ses_1", "call-never"),  # MAC right, call never begun
                f"{plain_b64}.{call}.{mac}",  # another spelling of the same ids
                f"ses_1.call-1.call-1.{mac}", f"ses_1..{mac}"):
        assert keys.attribute(a, bad) is None, bad
    assert keys.attribute(Identity("tenant-b"), cred) is None  # tenant-a's credential on tenant-b's socket
    keys.new_key("tenant-a")  # a new container: the old one's credentials stop working, its calls are forgotten
    assert keys.attribute(a, cred) is None
    keys.forget("tenant-b")
    assert keys.attribute(Identity("tenant-b"), call_credential(key_b, "ses_1", "call-1")) is None


def test_session_keys_forget_a_closed_session_and_stay_bounded() -> None:
    """A closed session's calls name nothing; at most max_calls calls are kept per tenant, the least recently
    begun or used dropped first."""
    keys = SessionKeys(max_calls=2)
    key = keys.new_key("t")
    t = Identity("t")

    def cred(session: str, call: str) -> str:
        made = call_credential(key, session, call)
        assert made is not None
        return made

    keys.begin_call("t", "ses_1", "c1")
    keys.begin_call("t", "ses_2", "c2")
    keys.end_session("t", "ses_1")
    assert keys.attribute(t, cred("ses_1", "c1")) is None
    assert keys.attribute(t, cred("ses_2", "c2")) == Attribution("ses_2", "c2")
    keys.begin_call("t", "ses_2", "c3")
    assert keys.attribute(t, cred("ses_2", "c2")) is not None  # used: now c3 is the oldest
    keys.begin_call("t", "ses_2", "c4")
    assert keys.attribute(t, cred("ses_2", "c3")) is None
    assert [keys.attribute(t, cred("ses_2", c)) is not None for c in ("c2", "c4")] == [True, True]


def test_a_new_key_keeps_only_the_calls_still_running() -> None:
    """A call is begun before its container (and so the key) is made: a new key keeps the calls running then,
    under the new key, and forgets the ended ones."""
    keys = SessionKeys()
    keys.new_key("t")
    keys.begin_call("t", "ses_1", "ended")
    keys.end_call("t", "ses_1", "ended")
    keys.begin_call("t", "ses_1", "running")
    key = keys.new_key("t")
    for call, named in (("ended", False), ("running", True)):
        cred = call_credential(key, "ses_1", call)
        assert (keys.attribute(Identity("t"), cred) is not None) is named, call


def test_a_tenant_without_a_key_keeps_only_its_running_calls() -> None:
    """Calls of a tenant that has no egress container leave nothing behind; its first container's key takes the
    calls running then over (their processes run in that container)."""
    keys = SessionKeys()
    for i in range(100):
        keys.begin_call("t", "ses_1", f"ended-{i}")
        keys.end_call("t", "ses_1", f"ended-{i}")
    keys.begin_call("t", "ses_1", "first")
    assert keys._calls == {} and list(keys._running) == [("t", "ses_1", "first")]
    key = keys.new_key("t")
    assert keys.attribute(Identity("t"), call_credential(key, "ses_1", "first")) == Attribution("ses_1", "first")
    assert keys.attribute(Identity("t"), call_credential(key, "ses_1", "ended-0")) is None


def test_call_credentials_are_url_safe_for_any_ids() -> None:
    """Ids that are not plain (dots, colons, spaces, non-ASCII: a model provider's tool-use id) are encoded, so
    the credential fits a URL's userinfo and Basic authentication and splits back into the same ids; a NUL
    (which would blur the MAC's separator), an empty or an overlong id gets no credential."""
    key = b"k" * 32
    for session, call in (("sess_AbC-9", "call_x1"), ("a.b:c/d", "toolu 01 ü"), ("~x", "=")):
        cred = call_credential(key, session, call)
        assert cred is not None and re.fullmatch(r"[A-Za-z0-9_~-]+\.[A-Za-z0-9_~-]+\.[A-Za-z0-9_-]{22}", cred), cred
        assert parse_credential(cred) == (session, call, cred.rsplit(".", 1)[1])
    assert call_credential(key, "sess_1", "call_1") == (
        "sess_1.call_1." + base64.urlsafe_b64encode(
            hmac.new(key, b"sess_1\0call_1", hashlib.sha256).digest()[:16]).decode().rstrip("="))
    for session, call in (("a\0b", "c"), ("a", "b\0c"), ("", "c"), ("s", "x" * 257)):
        assert call_credential(key, session, call) is None


def test_call_proxy_env_carries_the_calls_credential() -> None:
    """Every proxy variable points at the forwarder with the call's credential; without a call id, with none
    (the proxy answers 407)."""
    env = call_proxy_env(b"k" * 32, "ses_1", "call_1")
    assert env["https_proxy"] == f"http://{call_credential(b'k' * 32, 'ses_1', 'call_1')}:x@127.0.0.1:3128"
    assert env["NO_PROXY"] == "" and len(env) == 6 and len(set(env.values())) == 2
    assert call_proxy_env(b"k" * 32, "ses_1", None)["HTTP_PROXY"] == "http://127.0.0.1:3128"


def test_first_attribution_tries_each_source() -> None:
    """Session credentials and per-call tokens on one proxy: each is recognised by its own registry."""
    keys, registry = SessionKeys(), CredentialRegistry()
    key = keys.new_key("t")
    keys.begin_call("t", "ses_1", "call-1")
    token = registry.issue("t", "ses_web", "call-web")
    attribute = first_attribution(keys.attribute, registry.attribute)
    assert attribute(Identity("t"), call_credential(key, "ses_1", "call-1")) == Attribution("ses_1", "call-1")
    assert attribute(Identity("t"), token) == Attribution("ses_web", "call-web")
    assert attribute(Identity("t"), "nothing") is None
