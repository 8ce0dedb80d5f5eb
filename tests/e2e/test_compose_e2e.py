"""The guarded deployment (deploy/compose.yaml) brought up for real by pytest-docker with Debian's
docker-compose (v1) under a unique project name: the server image reaches Docker only through the HAProxy
socket proxy, a tool call runs in a real sandbox through it, and the proxy refuses what the server never asks
for (exec, image listing, a privileged container, a bind mount outside the data directory) while passing what
it does.

Images are built once by deploy/build-images.sh and reused by their content-hash tags; the project is torn
down (containers, network, volume definition) and the sandboxes the server made are removed one at a time.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_support import remove_server_containers
from pytest_docker.plugin import get_docker_services

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose.yaml"
SERVER_UID = 10001  # the server image's user (Dockerfile)
SANDBOX_UID = 1000


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    """The three images, built only when their tags are missing (the first run on a machine builds them)."""
    started = time.monotonic()
    done = subprocess.run(["bash", str(REPO / "deploy" / "build-images.sh")], capture_output=True, text=True,
                          timeout=840, env=os.environ | {"PYTHON": str(REPO / ".venv" / "bin" / "python")})
    assert done.returncode == 0, done.stderr[-4000:]
    tags = dict(line.split("=", 1) for line in done.stdout.split())
    print(f"images ready in {time.monotonic() - started:.1f} s: {tags}")
    assert set(tags) == {"OPENANALYST_SANDBOX_IMAGE", "OPENANALYST_SERVER_IMAGE", "OPENANALYST_PROXY_IMAGE"}
    return tags


class Deployment:
    """One compose project: its env file, the published base URL and a way to run compose commands in it."""

    def __init__(self, host_dir: Path, env_file: Path, project: str) -> None:
        self.host_dir, self.env_file, self.project = host_dir, env_file, project
        self.command = f"docker-compose --env-file {shlex.quote(str(env_file))}"  # v1: Debian's package
        self.base = ""

    def compose(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = ["docker-compose", "--env-file", str(self.env_file), "-f", str(COMPOSE), "-p", self.project, *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, f"docker-compose {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done

    def in_server(self, code: str) -> Any:
        """Run Python in the server container (the attacker's seat if the server were taken) and return the
        JSON it prints."""
        done = self.compose("exec", "-T", "server", "python3", "-c", code)
        return json.loads(done.stdout.strip().splitlines()[-1])

    def healthy(self) -> bool:
        try:
            return httpx.get(self.base + "/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False


@pytest.fixture(scope="module")
def deployment(images: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
               docker_client: Any) -> Iterator[Deployment]:
    """The project brought up by pytest-docker (docker-compose v1, a unique project name, the published port
    chosen by the engine), with API keys required as compose's default; torn down whatever the tests did."""
    host_dir = tmp_path_factory.mktemp("compose")
    os.chmod(host_dir, 0o755)
    (host_dir / "data").mkdir(mode=0o700)
    os.chown(host_dir / "data", SERVER_UID, SERVER_UID)
    (host_dir / "workspace").mkdir()
    os.chown(host_dir / "workspace", SANDBOX_UID, SANDBOX_UID)
    settings = images | {"OPENANALYST_HOST_DIR": str(host_dir), "OPENANALYST_PORT": "",  # any free port
                         "OPENANALYST_SANDBOX_LABELS": json.dumps({"openanalyst.test": "1"}),
                         "OPENANALYST_LOG_LEVEL": "info"}
    env_file = tmp_path_factory.mktemp("compose-env") / "compose.env"
    env_file.write_text("".join(f"{key}='{value}'\n" for key, value in settings.items()))
    deployed = Deployment(host_dir, env_file, f"oa-compose-{secrets.token_hex(4)}")
    started = time.monotonic()
    try:
        with get_docker_services(deployed.command, str(COMPOSE), deployed.project,
                                 ["up -d --no-build"], ["down --volumes --remove-orphans --timeout 10"]) as services:
            deployed.base = f"http://127.0.0.1:{services.port_for('server', 3080)}"
            try:
                services.wait_until_responsive(deployed.healthy, timeout=90, pause=0.2)
                print(f"compose up to /health 200: {time.monotonic() - started:.1f} s")
                yield deployed
            finally:
                print(deployed.compose("logs", "--no-color", check=False).stdout[-4000:])
    finally:
        remove_server_containers(docker_client, host_dir / "data")


def test_tool_call_through_the_socket_proxy(deployment: Deployment, docker_client: Any) -> None:
    """An API key made in the running server works; a bash call runs in a real sandbox created through the
    proxy (attach included), is audited, and the server has no Docker socket of its own."""
    made = deployment.compose("exec", "-T", "server", "openanalyst", "keys", "create", "--tenant", "alice")
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("oak_")
    auth = {"Authorization": f"Bearer {key}"}
    assert httpx.post(f"{deployment.base}/v1/tools/bash", json={"input": {"command": "true"}},
                      timeout=10).status_code == 401

    answer = httpx.post(f"{deployment.base}/v1/tools/bash", headers=auth, timeout=120,
                        json={"input": {"command": "echo from-the-sandbox; id -u; ls -d /workspace"}})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["exit_code"] == 0, result
    assert result["output"].splitlines()[0] == "from-the-sandbox"
    assert "/workspace" in result["output"]

    sandboxes = docker_client.containers.list(filters={"label": ["openanalyst.tenant=alice",
                                                                 "openanalyst.test=1"]})
    mine = [c for c in sandboxes if c.attrs["HostConfig"]["Binds"][0].startswith(str(deployment.host_dir))]
    assert len(mine) == 1
    assert mine[0].attrs["HostConfig"]["NetworkMode"] == "none"
    assert mine[0].attrs["HostConfig"]["Binds"] == [f"{deployment.host_dir}/data/workspaces/alice:/workspace:rw"]

    audit = httpx.get(f"{deployment.base}/v1/audit", headers=auth, timeout=10).json()
    finished = [r for r in audit["data"] if r["phase"] == "finished"]
    assert finished[-1]["container_id"] == mine[0].id and finished[-1]["exit_code"] == 0
    assert httpx.get(f"{deployment.base}/v1/audit/verify", headers=auth, timeout=10).json()["ok"] is True

    viewer = httpx.get(f"{deployment.base}/viewer/viewer.js", timeout=10)  # package data made it into the wheel
    assert viewer.status_code == 200 and "script-src 'self'" in viewer.headers["content-security-policy"]

    server = docker_client.containers.get(f"{deployment.project}_server_1")
    assert not [m for m in server.attrs["Mounts"] if m["Destination"].endswith(".sock")]
    assert server.attrs["Config"]["User"] == "10001:10001"
    logs = deployment.compose("logs", "--no-color", "socket-proxy").stdout
    assert "POST /v1.41/containers/create HTTP/1.1" in logs
    assert " 101 " in logs  # the runner's stdio: attach upgraded through HAProxy


PROBE = r"""
import json, docker
api = docker.APIClient(base_url="tcp://socket-proxy:2375", version="1.41", timeout=30)
def status(call):
    try:
        call()
        return 200
    except docker.errors.APIError as exc:
        return exc.status_code
def create(**host):
    return api.create_container(IMAGE, command=["true"], labels={"openanalyst.test": "1"},
                                host_config=api.create_host_config(**host))
cid = api.containers()[0]["Id"]  # any running container: the server's own at least
out = {
    "list": status(lambda: api.containers(all=True)),
    "inspect": status(lambda: api.inspect_container(cid)),
    "version": status(api.version),
    "images_list": status(api.images),
    "info": status(api.info),
    "exec": status(lambda: api.exec_create(cid, ["id"])),
    "archive": status(lambda: api.get_archive(cid, "/etc/passwd")),
    "pull": status(lambda: api.pull("busybox", tag="latest")),
    "volumes": status(api.volumes),
    "privileged": status(lambda: create(privileged=True)),
    "cap_sys_admin": status(lambda: create(cap_add=["SYS_ADMIN"])),
    "pid_host": status(lambda: create(pid_mode="host")),
    "bind_root": status(lambda: create(binds=["/:/host"])),
    "bind_escape": status(lambda: create(binds=[HOST + "/data/../../../etc:/workspace:rw"])),
    "devices": status(lambda: create(devices=["/dev/sda:/dev/sda"])),
    "other_image": status(lambda: api.create_container("openanalyst/server-base:x", command=["true"])),
}
def raw_create(body):  # bytes as given: what Docker's JSON decoder would accept, not what docker-py writes
    import http.client
    conn = http.client.HTTPConnection("socket-proxy", 2375, timeout=30)
    conn.request("POST", "/v1.41/containers/create", body=body, headers={"Content-Type": "application/json"})
    answer = conn.getresponse()
    made = json.loads(answer.read() or b"{}")
    if answer.status == 201:
        api.remove_container(made["Id"], force=True)
    return answer.status
plain = '{"Image": %s, "Cmd": ["true"], "Labels": {"openanalyst.test": "1"}' % json.dumps(IMAGE)
out["raw_plain"] = raw_create((plain + "}").encode())
out["raw_lowercase_key"] = raw_create((plain + ', "HostConfig": {"privileged": true}}').encode())
out["raw_escaped_key"] = raw_create((plain + ', "HostConfig": {"Privil\\u0065ged": true}}').encode())
out["raw_folded_key"] = raw_create((plain + ', "HostConfig": {"Bind\u017f": ["/:/host"]}}').encode("utf-8"))
print(json.dumps(out))
"""


def test_the_proxy_refuses_what_the_server_never_asks_for(deployment: Deployment, images: dict[str, str]) -> None:
    """From inside the server container (a compromised server's seat), only the allow-listed calls pass:
    listing and inspecting containers and the version answer; exec, archive, image listing, pulls, volumes,
    /info and every dangerous container configuration are 403 from the proxy, including keys spelled the
    ways Docker's decoder accepts (lower case, a \\u escape, Unicode case folding)."""
    code = (PROBE.replace("IMAGE", json.dumps(images["OPENANALYST_SANDBOX_IMAGE"]))
            .replace("HOST", json.dumps(str(deployment.host_dir))))
    out = deployment.in_server(code)
    allowed = {"list", "inspect", "version"}
    assert out.pop("raw_plain") == 201  # a body the rules accept is created (and removed at once)
    assert {name: out[name] for name in allowed} == dict.fromkeys(allowed, 200), out
    refused = {name: status for name, status in out.items() if name not in allowed}
    assert refused == dict.fromkeys(refused, 403), out
    logs = deployment.compose("logs", "--no-color", "socket-proxy").stdout
    assert "<NOSRV>" in logs and " 403 " in logs  # HAProxy answered them itself: none reached the engine
