"""The allowlist plumbing, prototyped with a real container: ``network_mode=none`` plus one mounted directory
holding the session's proxy socket, served on the container's loopback by the image's
own toolrunner/runner/egress_forward.py.

From inside the container, allowed names work through the proxy (curl over HTTP and HTTPS, Python urllib),
and everything else gets nothing: a denied name, no proxy at all, raw TCP to the host's loopback origin, the
Docker bridge gateway, the metadata address, UDP, DNS, IPv6. The container only has ``lo``. Every address
probed exists only on this machine or is unroutable from a container without a network.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.origin import Origin, wait_records
from fakes.tls import make_tls

from policies.network import EgressRules
from toolrunner.egress import AddressPolicy, EgressProxy, Identity, MemorySink, ProxyThread, SessionKeys, StaticResolver
from toolrunner.runner.egress_env import KEY_VARIABLE

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]
ORIGIN_IP = "127.0.0.2"

PROBE = r'''
import json, os, socket, subprocess, sys, time, urllib.request, ssl
from toolrunner.runner.egress_env import KEY_VARIABLE, call_proxy_env
port, tls_port = int(os.environ["PORT"]), int(os.environ["TLS_PORT"])
# What the runner does for a call: its proxy variables, from the container's key (then dropped) and its id.
proxy_env = call_proxy_env(bytes.fromhex(os.environ.pop(KEY_VARIABLE)), "sess-1", "call-1")
out = {}
deadline = time.monotonic() + 20
while True:
    try:
        socket.create_connection(("127.0.0.1", 3128), timeout=1).close()
        break
    except OSError:
        assert time.monotonic() < deadline, "forwarder did not start"
        time.sleep(0.05)

def curl(*args, proxied=True):
    env = {**os.environ, **proxy_env} if proxied else dict(os.environ)
    r = subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True, text=True, env=env)
    return [r.returncode, r.stdout, r.stderr[-200:]]

def connect(family, kind, addr):
    s = socket.socket(family, kind)
    s.settimeout(3)
    try:
        if kind == socket.SOCK_DGRAM:
            s.sendto(b"x", addr)
            s.recvfrom(10)
        else:
            s.connect(addr)
        return "connected"
    except OSError as exc:
        return exc.__class__.__name__ + ":" + str(exc.errno)
    finally:
        s.close()

out["curl_http"] = curl(f"http://allowed.test:{port}/hello")
out["curl_https"] = curl("--cacert", "/opt/egress/ca.pem", f"https://allowed.test:{tls_port}/hello")
os.environ.update(proxy_env)  # urllib reads the same variables
ctx = ssl.create_default_context(cafile="/opt/egress/ca.pem")
opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx))
out["urllib_https"] = opener.open(f"https://allowed.test:{tls_port}/hello", timeout=10).read().decode()
out["curl_denied"] = curl("-i", f"http://denied.test:{port}/hello")
out["curl_host_loopback_name"] = curl("-i", f"http://hostport.test:{port}/hello")
out["curl_forged_session"] = curl("-i", "-x", "http://sess-2.call-1.AAAAAAAAAAAAAAAAAAAAAA:x@127.0.0.1:3128",
                                  f"http://allowed.test:{port}/hello")
for name in list(proxy_env):
    del os.environ[name]
out["curl_no_proxy"] = curl(f"http://allowed.test:{port}/hello", proxied=False)
out["tcp_origin_ip"] = connect(socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.2", port))
out["tcp_bridge_gateway"] = connect(socket.AF_INET, socket.SOCK_STREAM, ("172.17.0.1", 2375))
out["tcp_metadata"] = connect(socket.AF_INET, socket.SOCK_STREAM, ("169.254.169.254", 80))
out["udp_gateway_dns"] = connect(socket.AF_INET, socket.SOCK_DGRAM, ("172.17.0.1", 53))
out["tcp6_remote"] = connect(socket.AF_INET6, socket.SOCK_STREAM, ("2001:db8::1", 443))
try:
    out["dns"] = socket.getaddrinfo("allowed.test", 80)
except OSError as exc:
    out["dns"] = "failed:" + exc.__class__.__name__
out["interfaces"] = sorted(os.listdir("/sys/class/net"))
print("PROBE " + json.dumps(out))
'''


@pytest.fixture
def proxy_dir(tmp_path: Path) -> Iterator[tuple[Path, MemorySink, int, int, bytes]]:
    tls = make_tls("allowed.test")
    http, https = Origin(ORIGIN_IP), Origin(ORIGIN_IP, tls.server)
    sink, keys = MemorySink(), SessionKeys()
    key = keys.new_key("tenant-a")
    keys.begin_call("tenant-a", "sess-1", "call-1")
    proxy = EgressProxy(lambda _t: EgressRules(allow=("allowed.test", "hostport.test")), sink,
                        addresses=AddressPolicy.from_strings([f"{ORIGIN_IP}/32"]),
                        resolver=StaticResolver({"allowed.test": [ORIGIN_IP], "hostport.test": ["127.0.0.1"],
                                                 "denied.test": [ORIGIN_IP]}),
                        attribute=keys.attribute)
    thread = ProxyThread(proxy).start()
    sock_dir = tmp_path / "egress"
    sock_dir.mkdir()
    thread.listen_unix(Identity("tenant-a"), str(sock_dir / "proxy.sock"))
    os.chmod(sock_dir / "proxy.sock", 0o666)  # the sandbox's uid connects; the directory is mounted read-only
    opt = tmp_path / "opt"
    opt.mkdir()
    (opt / "probe.py").write_text(PROBE)
    (opt / "ca.pem").write_text("".join(ssl.DER_cert_to_PEM_cert(d) for d in tls.client.get_ca_certs(True)))
    for path in (tmp_path, opt, sock_dir, *opt.iterdir()):
        path.chmod(path.stat().st_mode | 0o755 if path.is_dir() else 0o644)
    yield sock_dir, sink, http.port, https.port, key
    thread.stop()
    http.close()
    https.close()


def test_allowlist_container_reaches_only_the_proxy(docker_client: Any, sandbox_image: str,
                                                    proxy_dir: tuple[Path, MemorySink, int, int, bytes]) -> None:
    """With a call's proxy variables derived from the container's key (as the runner does), allowed names pass
    through the mounted socket and are attributed to that call; a forged credential gets 407; every other way
    out fails inside the container."""
    sock_dir, sink, port, tls_port, key = proxy_dir
    container = docker_client.containers.create(
        sandbox_image, entrypoint=["sh", "-c",
                                   "python3 -m toolrunner.runner.egress_forward & exec python3 /opt/egress/probe.py"],
        network_mode="none", user="1000:1000", read_only=True, cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        environment={"PORT": str(port), "TLS_PORT": str(tls_port), KEY_VARIABLE: key.hex()},
        volumes={str(sock_dir): {"bind": "/run/openanalyst/egress", "mode": "ro"},
                 str(sock_dir.parent / "opt"): {"bind": "/opt/egress", "mode": "ro"}},
        labels={"openanalyst.test": "1"}, detach=True)
    try:
        container.start()
        status = container.wait(timeout=90)
        logs = container.logs().decode()
    finally:
        container.remove(force=True)
    assert status["StatusCode"] == 0, logs
    line = next(line for line in logs.splitlines() if line.startswith("PROBE "))
    out = json.loads(line.removeprefix("PROBE "))
    assert out["curl_http"][:2] == [0, f"hello allowed.test:{port}"], out
    assert out["curl_https"][:2] == [0, f"hello allowed.test:{tls_port}"], out
    assert out["urllib_https"] == f"hello allowed.test:{tls_port}"
    assert " 403 " in out["curl_denied"][1] and "X-Egress-Rule: default" in out["curl_denied"][1]
    assert " 403 " in out["curl_host_loopback_name"][1] and "loopback address" in out["curl_host_loopback_name"][1]
    assert " 407 " in out["curl_forged_session"][1], out["curl_forged_session"]
    assert out["curl_no_proxy"][0] != 0  # no DNS, no route
    assert out["tcp_origin_ip"].startswith("ConnectionRefusedError")  # the container's own lo, not the host's
    for key in ("tcp_bridge_gateway", "tcp_metadata", "udp_gateway_dns"):
        assert out[key].startswith("OSError:101"), (key, out[key])  # ENETUNREACH
    assert out["tcp6_remote"] == "OSError:99"  # EADDRNOTAVAIL: the container has no IPv6 address at all
    assert str(out["dns"]).startswith("failed:") and out["interfaces"] == ["lo"]
    decisions = sorted((r.host, r.decision, r.rule) for r in wait_records(sink, 6))
    assert decisions == [("allowed.test", "allow", "allow:allowed.test")] * 3 + [
        ("allowed.test", "deny", "credential"), ("denied.test", "deny", "default"),
        ("hostport.test", "deny", "address:loopback")]
    attributed = {(r.tenant, r.session, r.call_id) for r in sink.records if r.rule != "credential"}
    assert attributed == {("tenant-a", "sess-1", "call-1")}
