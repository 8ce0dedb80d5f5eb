"""How a network mode becomes Docker settings: open is the bridge, allowlist keeps network none and mounts the
tenant's proxy socket directory read-only with the container's key, and the inspect check holds both mounts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from policies.docker_args import (
    EGRESS_KEY_VARIABLE,
    EGRESS_MOUNT,
    ContainerSpec,
    container_kwargs,
    host_config_mismatches,
)
from policies.loader import policy_for
from policies.model import Policy


def _policy(network: str, **egress: Any) -> Policy:
    return Policy.model_validate({**policy_for("ci").model_dump(), "network": network,
                                  "egress": egress or {}})


def test_modes_map_to_docker_networks(tmp_path: Path) -> None:
    """none and allowlist give network none, open (and its old name bridge) the bridge."""
    spec = ContainerSpec(image="img", workspace=tmp_path, uid=1000, gid=1000)
    modes = {m: container_kwargs(_policy(m), spec)["network_mode"] for m in ("none", "allowlist", "open", "bridge")}
    assert modes == {"none": "none", "allowlist": "none", "open": "bridge", "bridge": "bridge"}


def test_allowlist_mounts_the_socket_read_only_with_the_key(tmp_path: Path) -> None:
    """Under allowlist with a socket directory: a read-only mount and the key; without one, neither (no way
    out at all); other modes never get them even when given."""
    egress = tmp_path / "egress"
    spec = ContainerSpec(image="img", workspace=tmp_path / "ws", uid=1000, gid=1000, egress_dir=egress,
                         egress_key="ab" * 32)
    kw = container_kwargs(_policy("allowlist", allow=["pypi.org"]), spec)
    assert kw["volumes"][str(egress)] == {"bind": EGRESS_MOUNT, "mode": "ro"}
    assert kw["environment"][EGRESS_KEY_VARIABLE] == "ab" * 32
    bare = container_kwargs(_policy("allowlist"), ContainerSpec(image="img", workspace=tmp_path, uid=1, gid=1))
    assert list(bare["volumes"]) == [str(tmp_path)] and EGRESS_KEY_VARIABLE not in bare["environment"]
    for mode in ("none", "open"):
        other = container_kwargs(_policy(mode), spec)
        assert str(egress) not in other["volumes"] and EGRESS_KEY_VARIABLE not in other["environment"]


def test_inspect_check_expects_exactly_both_mounts(tmp_path: Path) -> None:
    """The verify step accepts the workspace and the read-only socket directory, and flags a missing, writable
    or extra mount."""
    ws, egress = tmp_path / "ws", tmp_path / "egress"
    kw = container_kwargs(_policy("allowlist"), ContainerSpec(image="img", workspace=ws, uid=1000, gid=1000,
                                                             egress_dir=egress, egress_key="00" * 32))
    good = {
        "Config": {"User": "0:0", "OpenStdin": True, "StdinOnce": False, "Tty": False, "Cmd": kw["command"]},
        "HostConfig": {"CapDrop": ["ALL"], "CapAdd": ["CAP_KILL", "CAP_SETGID", "CAP_SETUID"],
                       "ReadonlyRootfs": True, "SecurityOpt": ["no-new-privileges"],
                       "Privileged": False, "PidsLimit": 128, "Memory": 256 << 20, "MemorySwap": 256 << 20,
                       "NanoCpus": 500_000_000, "NetworkMode": "none", "Devices": [], "Tmpfs": {"/tmp": ""},
                       "IpcMode": "private", "Binds": [f"{egress}:{EGRESS_MOUNT}:ro", f"{ws}:/workspace:rw"]},
        "Mounts": [{"Source": str(egress), "Destination": EGRESS_MOUNT},
                   {"Source": str(ws), "Destination": "/workspace"}],
    }
    assert host_config_mismatches(good, kw) == []
    missing = {**good, "Mounts": good["Mounts"][1:]}
    assert any("Mounts" in p for p in host_config_mismatches(missing, kw))
    writable = {**good, "HostConfig": {**good["HostConfig"],
                                       "Binds": [f"{egress}:{EGRESS_MOUNT}:rw", f"{ws}:/workspace:rw"]}}
    assert any("Binds" in p for p in host_config_mismatches(writable, kw))
    bridged = {**good, "HostConfig": {**good["HostConfig"], "NetworkMode": "bridge"}}
    assert any("NetworkMode" in p for p in host_config_mismatches(bridged, kw))
