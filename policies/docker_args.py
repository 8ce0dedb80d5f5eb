"""The one place a policy becomes docker-py ``containers.create`` keyword arguments, and the check that the
engine applied them.

Every hardening setting lives here, so a reviewer reads one function to know what a sandbox may do:
the runner started as root with only CAP_SETUID, CAP_SETGID and CAP_KILL (it drops to its own uid at once
and starts every tool process under a session uid without any capability: docs/runner-trust.md), no new
privileges, read-only root, a size-capped tmpfs, tini as PID 1, pids /
memory / CPU / file-size limits, no network by default, no devices, and exactly one bind mount: the tenant's
workspace at ``/workspace``. ``host_config_mismatches`` compares ``docker inspect`` with what was asked,
so a daemon that silently ignores a limit (e.g. rootless Docker on cgroup v1) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policies.model import Policy
from policies.network import docker_network_mode

WORKSPACE_MOUNT = "/workspace"
# Under network = "allowlist": where the tenant's egress proxy socket directory is mounted (read-only), and
# the variable carrying the container's key for its sessions' proxy credentials (docs/egress.md).
EGRESS_MOUNT = "/run/openanalyst/egress"
EGRESS_KEY_VARIABLE = "OPENANALYST_EGRESS_KEY"
# What the runner needs to start tool processes as other uids and to kill them; nothing else, and tools
# keep none of it (a non-root uid loses every capability across exec).
RUNNER_CAPS = ["KILL", "SETGID", "SETUID"]
ISOLATION_MODES = ("uid", "shared")
MIB = 1024 * 1024
DOCKER_SOCKET_NAMES = ("docker.sock", "containerd.sock")


@dataclass(frozen=True)
class ContainerSpec:
    """Everything besides the policy that a tenant container is made from."""

    image: str
    workspace: Path
    uid: int  # the tools' uid in isolation "shared" (the workspace owner); unused with "uid"
    gid: int  # the tools' group: the workspace's, so that every session can write it
    isolation: str = "uid"  # "uid": a uid per session; "shared": all sessions as `uid`
    labels: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    command: list[str] | None = None  # None: the runner, with the isolation arguments
    runtime: str | None = None  # overrides the policy's runtime when set (server-wide choice)
    egress_dir: Path | None = None  # allowlist: the tenant's proxy socket directory, mounted read-only
    egress_key: str | None = None  # allowlist: the container's key for its sessions' proxy credentials


def runner_command(spec: ContainerSpec) -> list[str]:
    """The runner's command line: its isolation mode and the identity of the tools."""
    if spec.isolation not in ISOLATION_MODES:
        raise ValueError(f"isolation must be one of {ISOLATION_MODES}, not {spec.isolation!r}")
    argv = ["python3", "-I", "-m", "toolrunner.runner", "--isolation", spec.isolation, "--tool-gid", str(spec.gid)]
    if spec.isolation == "shared":
        argv += ["--shared-uid", str(spec.uid)]
    return argv


def container_kwargs(policy: Policy, spec: ContainerSpec) -> dict[str, Any]:
    """docker-py ``containers.create`` kwargs for one tenant container under ``policy``."""
    memory = f"{policy.memory_mb}m"
    kwargs: dict[str, Any] = {
        "image": spec.image,
        "user": "0:0",
        "cap_drop": ["ALL"],
        "cap_add": list(RUNNER_CAPS),
        "security_opt": ["no-new-privileges"],
        "privileged": False,
        "read_only": True,
        # `exec` on /tmp: agents write a script to /tmp and run it; forbidding that buys nothing when the
        # workspace (rw, needed) is executable anyway and the root filesystem is read-only. nosuid+nodev stay.
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,exec,size={policy.tmpfs_mb}m,mode=1777"},
        "shm_size": f"{min(policy.tmpfs_mb, 64)}m",
        "init": True,  # tini as PID 1 reaps orphans the runner does not own
        "pids_limit": policy.pids,
        "mem_limit": memory,
        "memswap_limit": memory,  # equal: no swap beyond the memory limit
        "nano_cpus": int(policy.cpus * 1_000_000_000),
        "ulimits": [
            {"Name": "nofile", "Soft": policy.nofile, "Hard": policy.nofile},
            {"Name": "fsize", "Soft": policy.fsize_mb * MIB, "Hard": policy.fsize_mb * MIB},
            {"Name": "core", "Soft": 0, "Hard": 0},
        ],
        # The runner's stdout is the protocol stream and its stderr is captured over the attach stream by the
        # host (toolrunner.attach): a log driver would only copy every protocol byte to disk a second time.
        # Measured (echo over attach, median): 16 KiB frames 0.19-0.21 ms with "none" vs 0.22-0.24 ms with
        # json-file max-size=1m; 100 B frames within noise. "none" also keeps tenant output off the host disk.
        "log_config": {"Type": "none", "Config": {}},
        "network_mode": docker_network_mode(policy.network),  # allowlist: none, its way out is the socket
        "devices": [],
        "volumes": {str(spec.workspace): {"bind": WORKSPACE_MOUNT, "mode": "rw"}},
        # Only what the runner needs; never the server's environment (provider keys live there).
        "environment": {"LANG": "C.UTF-8", "OPENANALYST_SANDBOX": "1"},
        "labels": dict(spec.labels),
        "stdin_open": True,
        # detach=True keeps StdinOnce false: the runner's stdin survives a host detach, so a restarted server
        # can re-attach to it (docker-py sets StdinOnce whenever stdin_open is set without detach).
        "detach": True,
        "tty": False,
        "working_dir": WORKSPACE_MOUNT,
        "hostname": "sandbox",
        "ipc_mode": "private",
    }
    if policy.network == "allowlist" and spec.egress_dir is not None:
        kwargs["volumes"][str(spec.egress_dir)] = {"bind": EGRESS_MOUNT, "mode": "ro"}
        if spec.egress_key:
            kwargs["environment"][EGRESS_KEY_VARIABLE] = spec.egress_key
    kwargs["command"] = list(spec.command) if spec.command is not None else runner_command(spec)
    if spec.name is not None:
        kwargs["name"] = spec.name
    runtime = spec.runtime or policy.runtime
    if runtime is not None:
        kwargs["runtime"] = runtime
    return kwargs


def _mount_sources(attrs: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, destination) of every mount a container has, from ``docker inspect``."""
    return [(str(m.get("Source", "")), str(m.get("Destination", ""))) for m in attrs.get("Mounts") or []]


def host_config_mismatches(attrs: dict[str, Any], kwargs: dict[str, Any]) -> list[str]:
    """What ``docker inspect`` shows that differs from the create kwargs; empty when the engine obeyed."""
    hc: dict[str, Any] = attrs.get("HostConfig") or {}
    cfg: dict[str, Any] = attrs.get("Config") or {}
    problems: list[str] = []

    def expect(label: str, actual: Any, wanted: Any) -> None:
        if actual != wanted:
            problems.append(f"{label}: asked {wanted!r}, engine reports {actual!r}")

    memory = int(str(kwargs["mem_limit"]).rstrip("m")) * MIB
    expect("User", cfg.get("User"), kwargs["user"])
    expect("Cmd", cfg.get("Cmd"), kwargs["command"])
    expect("OpenStdin", cfg.get("OpenStdin"), True)
    expect("StdinOnce", cfg.get("StdinOnce"), False)
    expect("Tty", cfg.get("Tty"), False)
    expect("CapDrop", sorted(hc.get("CapDrop") or []), ["ALL"])
    expect("CapAdd", sorted(c.upper().removeprefix("CAP_") for c in hc.get("CapAdd") or []), RUNNER_CAPS)
    expect("ReadonlyRootfs", hc.get("ReadonlyRootfs"), True)
    expect("SecurityOpt", sorted(hc.get("SecurityOpt") or []), sorted(kwargs["security_opt"]))
    expect("Privileged", hc.get("Privileged"), False)
    expect("PidsLimit", hc.get("PidsLimit"), kwargs["pids_limit"])
    expect("Memory", hc.get("Memory"), memory)
    expect("MemorySwap", hc.get("MemorySwap"), memory)
    expect("NanoCpus", hc.get("NanoCpus"), kwargs["nano_cpus"])
    expect("NetworkMode", hc.get("NetworkMode"), kwargs["network_mode"])
    expect("Devices", hc.get("Devices") or [], [])
    expect("Tmpfs", sorted((hc.get("Tmpfs") or {}).keys()), ["/tmp"])
    expect("PidMode", hc.get("PidMode") or "", "")
    expect("IpcMode", hc.get("IpcMode"), "private")
    expect("UsernsMode", hc.get("UsernsMode") or "", "")
    volumes: dict[str, dict[str, str]] = kwargs["volumes"]
    expect("Binds", sorted(hc.get("Binds") or []),
           sorted(f"{src}:{b['bind']}:{b['mode']}" for src, b in volumes.items()))
    mounts = sorted(_mount_sources(attrs))
    wanted = sorted((src, b["bind"]) for src, b in volumes.items())
    if mounts != wanted:
        asked = ", ".join(f"{src} at {dst}" for src, dst in wanted)
        problems.append(f"Mounts: asked only {asked}, engine reports {mounts!r}")
    for src, dst in mounts:
        if any(src.endswith(n) or dst.endswith(n) for n in DOCKER_SOCKET_NAMES):
            problems.append(f"Mounts: a container-engine socket is mounted ({src} -> {dst})")
    return problems


RUNNER_UID = 999
_CAP_BITS = {"KILL": 5, "SETGID": 6, "SETUID": 7}


def runner_identity_mismatches(identity: object, isolation: str) -> list[str]:
    """What the runner's hello says about its own identity that differs from docs/runner-trust.md §1: its uid
    (all four ids), exactly the three capabilities in effect, nothing inheritable or ambient, no new
    privileges, not dumpable, tool processes unable to write under /proc (their oom_score_adj stays 1000),
    and the isolation asked for. Empty when all hold."""
    if not isinstance(identity, dict):
        return ["the runner did not report its identity (an old runner, or not the sandbox image's)"]
    wanted: dict[str, object] = {
        "mode": isolation,
        "uid": [RUNNER_UID] * 4,
        "cap_eff": sum(1 << bit for bit in _CAP_BITS.values()),
        "cap_inh": 0,
        "cap_amb": 0,
        "no_new_privs": 1,
        "dumpable": False,
        "proc_writes": "denied",
    }
    return [f"runner {key}: expected {value!r}, reported {identity.get(key)!r}"
            for key, value in wanted.items() if identity.get(key) != value]


def runner_egress_mismatches(egress: object, network: str) -> list[str]:
    """What the runner's hello says about the egress forwarder that differs from the policy's network mode:
    under ``allowlist`` its forwarder on the container's loopback must be listening (or every tool's network
    would fail for a reason nobody sees); under any other mode no proxy socket may have been mounted."""
    forwarder = egress.get("forwarder") if isinstance(egress, dict) else None
    wanted = "listening" if network == "allowlist" else "none"
    if forwarder == wanted:
        return []
    return [f"runner egress forwarder: expected {wanted!r} under network {network!r}, reported {forwarder!r}"]
