"""The allowlist mode wired end to end through the sandbox manager and the real runner: the container is made
with network none and the tenant's proxy socket mounted read-only (and the verify step accepts exactly that),
the runner serves the socket on the container's loopback and gives every process of each call proxy variables
with that call's own credential, so curl and Python in a bash call reach an allowed name, attributed to the
session and the call; a background process keeps naming the call that started it; forged credentials get
407; nothing else gets out; a tenant under the default policy has neither the mount nor the variables.

The harness begins each call with ``SessionKeys`` before sending it, with its id, as the server's dispatcher
does (``CallLedger.begin``)."""

from __future__ import annotations

import itertools
import shlex
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
from toolrunner.manager import CallOutcome, SandboxManager
from toolrunner.runner.egress_env import call_credential, call_proxy_env

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]
IP = "127.0.0.2"


class Plumbing:
    def __init__(self, hub: EgressHub, keys: SessionKeys) -> None:
        self.hub, self.keys = hub, keys
        self.key: dict[str, bytes] = {}  # the tests' copy of each tenant's current key

    def prepare(self, tenant: str) -> tuple[Path, str]:
        self.key[tenant] = self.keys.new_key(tenant)
        return self.hub.ensure(tenant), self.key[tenant].hex()

    def session_closed(self, tenant: str, session: str) -> None:
        self.keys.end_session(tenant, session)


class EgressHarness(Harness):
    plumbing: Plumbing
    _ids = itertools.count(1)

    async def _make(self) -> SandboxManager:
        backend = DockerBackend(timeout_s=self.config.docker_timeout_s)
        return SandboxManager(self.config, self.policy, backend=backend, egress=self.plumbing)

    def call(self, tenant: str, tool: str, input: dict[str, Any], *, session: str = "s1",
             timeout_s: float | None = None, wait: float = 90, call_id: str | None = None) -> CallOutcome:
        """A call begun as the dispatcher begins it, then sent with its id (``last_call_id``)."""
        call_id = call_id or f"call_{next(self._ids)}"
        self.plumbing.keys.begin_call(tenant, session, call_id)
        self.last_call_id = call_id
        return self.run(self.manager.call(tenant, session, tool, input, timeout_s=timeout_s, call_id=call_id), wait)


@pytest.fixture(scope="module")
def wired(sandbox_image: str, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Any, MemorySink, int]]:
    origin = Origin(IP)
    sink, keys = MemorySink(), SessionKeys()
    rules = {"ada": EgressRules(allow=("allowed.test", "late.test"))}
    proxy = EgressProxy(rules.get, sink, addresses=AddressPolicy.from_strings([f"{IP}/32"]),
                        resolver=StaticResolver({"allowed.test": [IP], "late.test": [IP], "denied.test": [IP]}),
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
    the proxy's 403; with the proxy variables unset nothing connects; records name the tenant, the session and
    the call that connected."""
    harness, sink, port = wired
    out = harness.bash("ada", f"curl -sS --max-time 10 http://allowed.test:{port}/hello", session="ses_a")
    assert out.result.output.strip() == f"hello allowed.test:{port}", out.result
    first = harness.last_call_id
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
    assert len({r.call_id for r in sink.records}) == 3 and first in {r.call_id for r in sink.records}


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


def test_a_leftover_process_connects_as_the_call_that_started_it(wired: tuple[Any, MemorySink, int]) -> None:
    """A background process started by call 1 connects while call 2 of the same session runs: its record is call
    1's, and call 2's own connection is call 2's (the order is forced by two FIFOs, not by time)."""
    harness, sink, port = wired
    sink.records.clear()
    fifo = f"/tmp/oa-leftover-{time.monotonic_ns()}"
    started = harness.bash("ada", f"mkfifo {fifo}.go {fifo}.done", session="ses_bg")
    assert started.result.exit_code == 0, started.result
    background = harness.call("ada", "bash", {"run_in_background": True, "command": (
        f"read -r _ < {fifo}.go; curl -sS --max-time 10 -o /dev/null http://late.test:{port}/late; "
        f"echo $? > {fifo}.done")}, session="ses_bg")
    assert background.result.error is None, background.result
    call_1 = harness.last_call_id
    during = harness.bash("ada", f"echo go > {fifo}.go; read -r rc < {fifo}.done; echo background=$rc; "
                                 f"curl -sS --max-time 10 http://allowed.test:{port}/hello",
                          session="ses_bg", timeout_s=60)
    call_2 = harness.last_call_id
    assert during.result.output.split() == ["background=0", "hello", f"allowed.test:{port}"], during.result
    records = wait_records(sink, 2)
    assert sorted((r.host, r.session, r.call_id, r.decision) for r in records) == [
        ("allowed.test", "ses_bg", call_2, "allow"), ("late.test", "ses_bg", call_1, "allow")]


# Each kind of process a call starts prints the proxy URL it was given (python one-shot; the REPL and a process
# it starts; javascript; bash and a process it starts).
SHOW_PROXY = {
    "python": ("python", {"code": "import os; print(os.environ['HTTP_PROXY'])"}),
    "repl": ("repl", {"code": "import os, subprocess\nprint(os.environ['HTTP_PROXY'])\n"
                              "_ = subprocess.run(['sh', '-c', 'echo $https_proxy'])"}),
    "javascript": ("javascript", {"code": "console.log(process.env.HTTP_PROXY)"}),
    "bash": ("bash", {"command": "echo $HTTP_PROXY; sh -c 'echo $https_proxy'"}),
}


def test_every_process_of_a_call_carries_that_calls_credential(wired: tuple[Any, MemorySink, int]) -> None:
    """python (started and forked from a zygote), the persistent REPL and what it starts, javascript, bash and a
    background process: each call's processes hold exactly that call's credential, a new one each call."""
    harness, _sink, _port = wired
    key = harness.plumbing.key["ada"]
    has_node = harness.manager.runner_caps is None or harness.manager.runner_caps.get("node", True)
    for round_ in range(3):
        for name, (tool, inp) in SHOW_PROXY.items():
            if name == "javascript" and not has_node:
                continue
            out = harness.call("ada", tool, inp, session="ses_env")
            url = call_proxy_env(key, "ses_env", harness.last_call_id)["HTTP_PROXY"]
            lines = out.result.output.split()
            assert lines and set(lines) == {url}, (round_, name, out.result)
    deadline = time.monotonic() + 60
    while True:  # until a python call was forked from the session's zygote (started without any credential)
        out = harness.call("ada", "python", {"code": "import os, sys\nprint(sys.flags.no_user_site, "
                                                      "os.environ['HTTP_PROXY'])"}, session="ses_env")
        forked, url = out.result.output.split()
        assert url == call_proxy_env(key, "ses_env", harness.last_call_id)["HTTP_PROXY"], out.result
        if forked == "1":
            break
        assert time.monotonic() < deadline, "no python call of the session was forked from its zygote"
    fifo = f"/tmp/oa-bg-env-{time.monotonic_ns()}"
    assert harness.bash("ada", f"mkfifo {fifo}", session="ses_env").result.exit_code == 0
    bg = harness.call("ada", "bash", {"run_in_background": True, "command": f"echo $HTTP_PROXY > {fifo}"},
                      session="ses_env")
    started_by = harness.last_call_id
    assert bg.result.error is None, bg.result
    waited = harness.bash("ada", f"cat {fifo}", session="ses_env", timeout_s=30)  # the writer's line, then EOF
    assert waited.result.output.strip() == call_proxy_env(key, "ses_env", started_by)["HTTP_PROXY"], waited.result


def test_forged_credentials_get_407_and_name_nobody(wired: tuple[Any, MemorySink, int]) -> None:
    """From inside a call: its own credential with a wrong MAC, a correctly signed credential naming another
    session's call with this session, and one naming a call never begun are each refused with 407, and their
    records name no session and no call; the call's own credential still works."""
    harness, sink, port = wired
    key = harness.plumbing.key["ada"]
    harness.bash("ada", "true", session="ses_other")
    others = harness.last_call_id
    stolen_call, never = call_credential(key, "ses_forge", others), call_credential(key, "ses_forge", "call_never")
    assert stolen_call is not None and never is not None
    sink.records.clear()
    forge = ("own=${HTTP_PROXY#http://}; own=${own%%:*}; "
             f"wrong=${{own%.*}}.{'A' * 22}; [ \"$wrong\" = \"$own\" ] && wrong=${{own%.*}}.{'B' * 22}; "
             f"for cred in \"$wrong\" {shlex.quote(stolen_call)} {shlex.quote(never)}; do "
             f"curl -s -o /dev/null -w '%{{http_code}} ' -x \"http://$cred:x@127.0.0.1:3128\" "
             f"http://allowed.test:{port}/hello; done; "
             f"curl -s -o /dev/null -w '%{{http_code}}' http://allowed.test:{port}/hello")
    out = harness.bash("ada", forge, session="ses_forge")
    assert out.result.output.split() == ["407", "407", "407", "200"], out.result
    records = wait_records(sink, 4)
    refused = [(r.rule, r.session, r.call_id) for r in records if r.decision == "deny"]
    assert refused == [("credential", None, None)] * 3, records
    assert [(r.session, r.call_id) for r in records if r.decision == "allow"] == [("ses_forge", harness.last_call_id)]
