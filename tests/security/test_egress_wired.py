"""The allowlist mode wired end to end through the sandbox manager and the real runner: the container is made
with network none and the tenant's proxy socket mounted read-only (and the verify step accepts exactly that),
the runner serves the socket on the container's loopback and gives each session its proxy variables, so curl
and Python in a bash call reach an allowed name, attributed to the session; nothing else gets out; a tenant
under the default policy has neither the mount nor the variables."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.origin import Origin, wait_records
from sandbox_support import Harness, make_config

from policies.docker_args import EGRESS_MOUNT
from policies.loader import policy_for
from policies.model import Policy
from policies.network import EgressRules
from toolrunner.docker_backend import DockerBackend
from toolrunner.egress import AddressPolicy, EgressHub, EgressProxy, MemorySink, SessionKeys, StaticResolver
from toolrunner.manager import SandboxManager

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]
IP = "127.0.0.2"


class Plumbing:
    def __init__(self, hub: EgressHub, keys: SessionKeys) -> None:
        self.hub, self.keys = hub, keys

    def prepare(self, tenant: str) -> tuple[Path, str]:
        return self.hub.ensure(tenant), self.keys.new_key(tenant).hex()


class EgressHarness(Harness):
    plumbing: Plumbing

    async def _make(self) -> SandboxManager:
        backend = DockerBackend(timeout_s=self.config.docker_timeout_s)
        return SandboxManager(self.config, self.policy, backend=backend, egress=self.plumbing)


@pytest.fixture(scope="module")
def wired(sandbox_image: str, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Any, MemorySink, int]]:
    origin = Origin(IP)
    sink, keys = MemorySink(), SessionKeys()
    rules = {"ada": EgressRules(allow=("allowed.test",))}
    proxy = EgressProxy(rules.get, sink, addresses=AddressPolicy.from_strings([f"{IP}/32"]),
                        resolver=StaticResolver({"allowed.test": [IP], "denied.test": [IP]}),
                        attribute=keys.attribute)
    hub = EgressHub(proxy, Path("/tmp") / f"oa-egress-test-{time.monotonic_ns()}")
    EgressHarness.plumbing = Plumbing(hub, keys)
    allowlist = Policy.model_validate({**policy_for("ci").model_dump(), "network": "allowlist",
                                       "egress": {"allow": ["allowed.test"]}})
    harness = EgressHarness(make_config(tmp_path_factory.mktemp("egress-data"), sandbox_image), {"ada": allowlist})
    try:
        yield harness, sink, origin.port
    finally:
        harness.close()
        hub.stop()
        origin.close()
        hub.root.rmdir()


def test_an_allowlist_sandbox_reaches_only_allowed_names(wired: tuple[Any, MemorySink, int]) -> None:
    """curl and urllib in a bash call reach the allowed name through the runner's forwarder; a denied name gets
    the proxy's 403; with the proxy variables unset nothing connects; records name the tenant and session."""
    harness, sink, port = wired
    out = harness.bash("ada", f"curl -sS --max-time 10 http://allowed.test:{port}/hello", session="ses_a")
    assert out.result.output.strip() == f"hello allowed.test:{port}", out.result
    py = harness.bash("ada", "python3 -c \"import urllib.request as u; "
                             f"print(u.urlopen('http://allowed.test:{port}/hello', timeout=10).read().decode())\"",
                      session="ses_a")
    assert py.result.output.strip() == f"hello allowed.test:{port}", py.result
    denied = harness.bash("ada", f"curl -s -o /dev/null -w '%{{http_code}}' http://denied.test:{port}/",
                          session="ses_a")
    assert denied.result.output.strip() == "403"
    direct = harness.bash("ada", "env -u http_proxy -u HTTP_PROXY curl -sS --max-time 5 "
                                 f"http://{IP}:{port}/hello; echo rc=$?", session="ses_a")
    assert "rc=0" not in direct.result.output and "hello" not in direct.result.output
    assert sorted((r.host, r.decision) for r in wait_records(sink, 3)) == [
        ("allowed.test", "allow"), ("allowed.test", "allow"), ("denied.test", "deny")]
    assert {(r.tenant, r.session) for r in sink.records} == {("ada", "ses_a")}


def test_the_inspected_container_proves_the_plumbing(wired: tuple[Any, MemorySink, int],
                                                     docker_client: Any) -> None:
    """ada's container: network none, the socket directory read-only at its mount, only lo inside; a default
    tenant's container has no such mount and its sessions no proxy variables."""
    harness, _sink, _port = wired
    ada = docker_client.containers.get(harness.run(harness.manager.ensure_started("ada")))
    assert ada.attrs["HostConfig"]["NetworkMode"] == "none"
    mounts = {m["Destination"]: m for m in ada.attrs["Mounts"]}
    assert set(mounts) == {"/workspace", EGRESS_MOUNT} and mounts[EGRESS_MOUNT]["RW"] is False
    lo = harness.bash("ada", "ls /sys/class/net")
    assert lo.result.output.split() == ["lo"]
    bob = docker_client.containers.get(harness.run(harness.manager.ensure_started("bob")))
    assert {m["Destination"] for m in bob.attrs["Mounts"]} == {"/workspace"}
    env = harness.bash("bob", "echo \"[${HTTP_PROXY:-}${https_proxy:-}]\"")
    assert env.result.output.strip() == "[]"


# Prints whether the call was forked from a zygote, then every proxy URL of the process's start environment
# (/proc/self/environ: for a forked call, the zygote's) that is not the session's own.
FOREIGN_PROXY = """
import os, sys
start = open('/proc/self/environ', 'rb').read().split(b'\\0')
urls = {v.partition(b'=')[2].decode() for v in start if v.partition(b'=')[0].upper() in (b'HTTP_PROXY', b'HTTPS_PROXY')}
print(sys.flags.no_user_site, sorted(urls - {os.environ['HTTP_PROXY']}))
"""


def test_a_forked_python_call_holds_no_other_sessions_credential(wired: tuple[Any, MemorySink, int]) -> None:
    """A new session's python call forked from a spare's zygote finds no proxy credential but its own session's
    in its start environment, so it cannot make its connections another session's (the spare's)."""
    harness, _sink, _port = wired
    deadline = time.monotonic() + 60
    for i in itertools.count():
        result = harness.call("ada", "python", {"code": FOREIGN_PROXY}, session=f"ses_fork{i}").result
        flag, foreign = result.output.strip().split(" ", 1)
        assert foreign == "[]", result
        if flag == "1":  # forked from the spare's zygote: the case that holds another name's environment
            break
        assert time.monotonic() < deadline, "no new session's python call was forked from a spare's zygote"
