"""Tenant-supplied provider URLs: which addresses are refused, the configuration-time check, and the guarded
client that checks again at every connection (real loopback servers; a resolver double stands in for DNS
where a test needs a name to change its answer)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from fakes import FakeOpenAI, Reply
from fakes.tls import make_tls

from server.errors import ApiError
from server.providers.addresses import UrlPolicy, forbidden_reason, ip_literal
from server.providers.guarded_http import guarded_client
from server.providers.urlguard import ProviderUrlForbidden, check_base_url, url_to_check

T = TypeVar("T")
DEFAULT = UrlPolicy()
LOOPBACK_ALLOWED = UrlPolicy.parse(False, ["127.0.0.1/32"])

FORBIDDEN = {
    "127.0.0.1": "loopback", "127.255.255.254": "loopback", "10.1.2.3": "RFC 1918", "172.16.0.1": "RFC 1918",
    "172.31.255.255": "RFC 1918", "192.168.1.1": "RFC 1918", "169.254.169.254": "metadata",
    "100.64.0.1": "CGNAT", "0.0.0.0": "unspecified", "224.0.0.1": "multicast", "239.255.255.250": "multicast",
    "255.255.255.255": "broadcast", "240.0.0.1": "reserved", "192.0.0.8": "IETF", "198.18.0.1": "benchmarking",
    "::1": "loopback", "::": "unspecified", "fc00::1": "ULA", "fd12:3456::1": "ULA", "fe80::1": "link-local",
    "fec0::1": "site-local", "ff02::1": "multicast", "::ffff:127.0.0.1": "loopback, embedded",
    "::ffff:169.254.169.254": "metadata", "64:ff9b::a00:1": "RFC 1918), embedded",
    "2002:7f00:1::1": "loopback, embedded", "2001::1": "Teredo", "::7f00:1": "IPv4-compatible",
    "2001:db8::1": "documentation",
}
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "172.32.0.1", "100.128.0.1", "2606:4700:4700::1111",
          "64:ff9b::808:808", "2002:808:808::1"]


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def resolver(answers: dict[str, list[list[str]]]) -> Callable[[str, int], Awaitable[list[str]]]:
    """A DNS double: each name answers its lists in turn (the last one repeats); unknown names fail."""
    calls: dict[str, int] = {}

    async def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        n = calls.get(host, 0)
        calls[host] = n + 1
        return answers[host][min(n, len(answers[host]) - 1)]

    return resolve


def refusal(coro: Awaitable[Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        run(coro)
    assert caught.value.status == 422
    return caught.value


@pytest.mark.parametrize(("address", "why"), FORBIDDEN.items())
def test_non_public_addresses_are_named(address: str, why: str) -> None:
    """Loopback, private, link-local/metadata, CGNAT, multicast, unspecified, reserved and the IPv6 forms
    that embed such an IPv4 address are refused, each with a reason that names its kind."""
    reason = forbidden_reason(ipaddress.ip_address(address))
    assert reason is not None and why.lower() in reason.lower(), reason


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    """Public unicast addresses (also reached through NAT64 or 6to4) and neighbours of private ranges pass."""
    assert forbidden_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(("host", "expected"), [
    ("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("127.1", "127.0.0.1"),
    ("[::1]", "::1"), ("10.0.0.1.", "10.0.0.1"), ("example.com", None), ("cafe", None), ("localhost", None),
    ("0xcafe.example", None),
])
def test_numeric_host_forms_are_read_as_addresses(host: str, expected: str | None) -> None:
    """Decimal, hex, octal and short IPv4 forms are the addresses a resolver makes of them; names are not."""
    ip = ip_literal(host)
    assert (str(ip) if ip else None) == expected


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/", "http://10.0.0.5/v1", "http://169.254.169.254/latest/meta-data", "http://[::1]:8080/",
    "http://2130706433/", "http://0x7f000001:11434", "http://localhost:11434", "https://[fe80::1]/",
    "http://[::ffff:7f00:1]/", "http://100.64.1.1/", "http://0.0.0.0:3080",
])
def test_default_policy_refuses_private_targets(url: str) -> None:
    """By default a tenant's URL may not reach loopback (also as a number or the name localhost, resolved by
    the real system resolver), private, link-local, metadata, CGNAT or unspecified addresses."""
    err = refusal(check_base_url(url, DEFAULT))
    assert err.code == "PROVIDER_URL_FORBIDDEN"
    assert "OPENANALYST_PROVIDER_URL_ALLOWLIST" in err.message


@pytest.mark.parametrize(("url", "words"), [
    ("ftp://example.com/", "http or https"), ("http://user:pw@example.com/", "userinfo"),
    ("http://key@8.8.8.8/", "userinfo"), ("file:///etc/passwd", "http or https"),
])
def test_malformed_urls_are_refused(url: str, words: str) -> None:
    """Other schemes and credentials in the URL are refused before any lookup."""
    err = refusal(check_base_url(url, UrlPolicy(allow_private=True)))
    assert err.code == "PROVIDER_URL_FORBIDDEN" and words in err.message


def test_names_are_checked_on_every_address() -> None:
    """A name is resolved and every address checked: one private address among public ones refuses it;
    a name that does not resolve is PROVIDER_URL_UNRESOLVED; a public literal needs no lookup."""
    dns = resolver({"gw.example": [["93.184.216.34"]], "mixed.example": [["93.184.216.34", "10.0.0.7"]]})
    run(check_base_url("https://gw.example/v1", DEFAULT, dns))
    run(check_base_url("https://93.184.216.34/v1", DEFAULT, dns))
    err = refusal(check_base_url("https://mixed.example/v1", DEFAULT, dns))
    assert err.code == "PROVIDER_URL_FORBIDDEN" and "RFC 1918" in err.message
    assert "10.0.0.7" not in err.message  # the kind is named, the internal address is not echoed
    assert refusal(check_base_url("https://nowhere.example/", DEFAULT, dns)).code == "PROVIDER_URL_UNRESOLVED"


def test_owner_allowlist_and_switch() -> None:
    """The owner's allow-list lifts the rule only for what it names (a CIDR, an IP, a host name); the switch
    lifts it for every address; a malformed entry is refused."""
    run(check_base_url("http://127.0.0.1:9", LOOPBACK_ALLOWED))
    assert refusal(check_base_url("http://10.0.0.5", LOOPBACK_ALLOWED)).code == "PROVIDER_URL_FORBIDDEN"
    assert refusal(check_base_url("http://169.254.169.254", LOOPBACK_ALLOWED)).code == "PROVIDER_URL_FORBIDDEN"
    run(check_base_url("http://10.9.8.7/v1", UrlPolicy.parse(False, ["10.0.0.0/8"])))
    run(check_base_url("http://localhost:11434", UrlPolicy.parse(False, ["LOCALHOST."])))
    run(check_base_url("http://[fd00::5]/", UrlPolicy.parse(False, ["fd00::/8"])))
    for url in ("http://127.0.0.1", "http://169.254.169.254", "http://[::1]"):
        run(check_base_url(url, UrlPolicy(allow_private=True)))
    with pytest.raises(ValueError, match="not an IP, CIDR or host name"):
        UrlPolicy.parse(False, ["http://x/"])


def test_guarded_client_refuses_loopback_without_connecting() -> None:
    """The guarded client resolves the name itself and refuses a loopback answer: nothing reaches the server."""
    with FakeOpenAI() as fake:
        url = f"http://localhost:{fake.port}/v1/chat/completions"

        async def post() -> None:
            async with guarded_client(DEFAULT) as client:
                await client.post(url, json={})

        with pytest.raises(ProviderUrlForbidden, match="loopback"):
            run(post())
        assert fake.requests == []


def test_guarded_client_connects_to_the_checked_address_keeping_the_host() -> None:
    """Allowed by the owner, the request reaches the server with the name in the Host header (the TCP
    connection went to the checked address, the request still names the host)."""
    with FakeOpenAI() as fake:
        fake.script([Reply.http_error(418)])

        async def post() -> int:
            async with guarded_client(LOOPBACK_ALLOWED) as client:
                return (await client.post(f"http://localhost:{fake.port}/v1/x", json={})).status_code

        assert run(post()) == 418
        assert fake.requests[0].headers["host"] == f"localhost:{fake.port}"


def test_dns_rebinding_is_caught_at_connection_time() -> None:
    """A name that resolved to a public address when configured and to loopback later is refused when
    connecting, although the configuration-time check passed."""
    with FakeOpenAI() as fake:
        dns = resolver({"rebind.example": [["93.184.216.34"], ["127.0.0.1"]]})
        url = f"http://rebind.example:{fake.port}/v1"
        run(check_base_url(url, DEFAULT, dns))

        async def post() -> None:
            async with guarded_client(DEFAULT, resolver=dns) as client:
                await client.post(url + "/chat/completions", json={})

        with pytest.raises(ProviderUrlForbidden, match=r"rebind\.example.*loopback"):
            run(post())
        assert fake.requests == []


def test_tls_keeps_sni_and_verifies_the_name() -> None:
    """Over HTTPS the guarded client connects to the checked IP but sends the host name as SNI and verifies
    the certificate against it; the same server reached by its IP fails verification."""
    tls = make_tls("gw.test")
    with FakeOpenAI().use_tls(tls.server) as fake:
        fake.script([Reply.http_error(418)])
        dns = resolver({"gw.test": [["127.0.0.1"]]})

        async def get(url: str) -> int:
            async with guarded_client(LOOPBACK_ALLOWED, verify=tls.client, resolver=dns) as client:
                return (await client.post(url, json={})).status_code

        assert run(get(f"https://gw.test:{fake.port}/v1/x")) == 418
        assert tls.sni == ["gw.test"] and fake.requests[0].headers["host"] == f"gw.test:{fake.port}"
        with pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|IP address mismatch"):
            run(get(f"https://127.0.0.1:{fake.port}/v1/x"))
        assert len(fake.requests) == 1


def test_the_url_checked_when_set() -> None:
    """The given URL is checked; without one, a provider default that is an IP address (Ollama's loopback)
    is, and a default public name is not (no lookup needed to store a key)."""
    assert url_to_check("https://gw.example/v1", "http://127.0.0.1:11434") == "https://gw.example/v1"
    assert url_to_check(None, "http://127.0.0.1:11434") == "http://127.0.0.1:11434"
    assert url_to_check(None, "https://api.x.ai/v1") is None
