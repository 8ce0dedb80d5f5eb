"""Policies: presets load, bad files fail naming file and field, a policy maps to hardened docker kwargs."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from policies.docker_args import (
    ContainerSpec,
    container_kwargs,
    host_config_mismatches,
    runner_egress_mismatches,
    runner_identity_mismatches,
)
from policies.loader import PolicyError, load_policy, policy_for, preset_names
from policies.model import Policy


def test_presets_load_and_ci_is_tighter_than_default() -> None:
    """The three shipped presets validate, and ci is tighter than default, which is tighter than trusted."""
    assert preset_names() == ["ci", "default", "trusted"]
    ci, default, trusted = (policy_for(n) for n in ("ci", "default", "trusted"))
    for field in ("cpus", "memory_mb", "pids", "tmpfs_mb", "max_timeout_s"):
        assert getattr(ci, field) < getattr(default, field) < getattr(trusted, field), field
    assert default.network == "none" and ci.network == "none"
    assert policy_for("default") is policy_for("default")


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "custom.toml"
    path.write_text(body)
    return path


BASE = ("cpus = 1\nmemory_mb = 256\npids = 64\ntmpfs_mb = 16\nnofile = 256\nfsize_mb = 16\n"
        "default_timeout_s = 10\nmax_timeout_s = 20\noutput_cap_bytes = 4096\nmax_concurrent_calls = 2\n")


def test_file_policy_takes_its_name_from_the_file(tmp_path: Path) -> None:
    """A TOML file without a name gets the file's stem as its policy name."""
    policy = load_policy(_write(tmp_path, BASE))
    assert policy.name == "custom" and policy.pids == 64


@pytest.mark.parametrize(("body", "field"), [
    (BASE.replace("pids = 64", "pids = 0"), "pids"),
    (BASE.replace("max_timeout_s = 20", "max_timeout_s = 5"), None),
    (BASE + "cpu = 2\n", "cpu"),
    (BASE + 'network = "host"\n', "network"),
    (BASE + 'runtime = "runsc"\nnetwork = "bridge"\n', None),
    (BASE.replace("memory_mb = 256", 'memory_mb = "lots"'), "memory_mb"),
])
def test_bad_policy_file_names_file_and_field(tmp_path: Path, body: str, field: str | None) -> None:
    """A bad value, unknown field or inconsistent limits raise PolicyError naming the file (and field)."""
    path = _write(tmp_path, body)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(path) in str(info.value)
    if field is not None:
        assert info.value.field == field and repr(field) in str(info.value)


def test_unknown_preset_and_broken_toml_are_clear(tmp_path: Path) -> None:
    """An unknown preset lists the known ones; broken TOML says so."""
    with pytest.raises(PolicyError, match="no such preset"):
        load_policy("nonexistent")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(_write(tmp_path, "cpus = = 1"))


def test_policy_is_frozen_and_timeouts_are_clamped() -> None:
    """A Policy cannot be changed after validation; requested timeouts never exceed the maximum."""
    policy = policy_for("ci")
    with pytest.raises(ValidationError):
        policy.cpus = 4  # type: ignore[misc]
    assert policy.effective_timeout(None) == policy.default_timeout_s
    assert policy.effective_timeout(10_000) == policy.max_timeout_s
    denying = Policy.model_validate({**policy.model_dump(), "denied_tools": ["bash"]})
    assert not denying.allows("bash") and denying.allows("python")


def test_docker_kwargs_are_hardened(tmp_path: Path) -> None:
    """The kwargs keep only the runner's three capabilities (tools get none), forbid new privileges, mount only
    the workspace, set the limits, and start the runner with per-session uids."""
    policy = policy_for("default")
    kw = container_kwargs(policy, ContainerSpec(image="img", workspace=tmp_path, uid=1000, gid=1000))
    assert kw["user"] == "0:0" and kw["cap_drop"] == ["ALL"] and kw["read_only"] is True
    assert kw["cap_add"] == ["KILL", "SETGID", "SETUID"]
    assert kw["command"][-4:] == ["--isolation", "uid", "--tool-gid", "1000"]
    assert kw["security_opt"] == ["no-new-privileges"] and kw["privileged"] is False
    assert kw["network_mode"] == "none" and kw["devices"] == [] and kw["init"] is True
    assert kw["volumes"] == {str(tmp_path): {"bind": "/workspace", "mode": "rw"}}
    assert kw["mem_limit"] == kw["memswap_limit"] == "512m" and kw["pids_limit"] == 256
    assert kw["nano_cpus"] == 1_000_000_000 and "size=64m" in kw["tmpfs"]["/tmp"]
    assert not any("docker" in k.lower() or "KEY" in k for k in kw["environment"])


def test_inspect_check_flags_every_tampered_setting(tmp_path: Path) -> None:
    """host_config_mismatches reports a missing cap drop, a privileged flag and an extra docker.sock mount."""
    spec = ContainerSpec(image="img", workspace=tmp_path, uid=1000, gid=1000)
    kw = container_kwargs(policy_for("ci"), spec)
    ws = str(tmp_path)
    good = {
        "Config": {"User": "0:0", "OpenStdin": True, "StdinOnce": False, "Tty": False, "Cmd": kw["command"]},
        "HostConfig": {"CapDrop": ["ALL"], "CapAdd": ["CAP_KILL", "CAP_SETGID", "CAP_SETUID"],
                       "ReadonlyRootfs": True, "SecurityOpt": ["no-new-privileges"],
                       "Privileged": False, "PidsLimit": 128, "Memory": 256 << 20, "MemorySwap": 256 << 20,
                       "NanoCpus": 500_000_000, "NetworkMode": "none", "Devices": [], "Tmpfs": {"/tmp": ""},
                       "IpcMode": "private", "Binds": [f"{ws}:/workspace:rw"]},
        "Mounts": [{"Source": ws, "Destination": "/workspace"}],
    }
    assert host_config_mismatches(good, kw) == []
    bad = {**good, "HostConfig": {**good["HostConfig"], "CapDrop": [], "Privileged": True,
                                  "CapAdd": ["CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SYS_PTRACE"]},
           "Config": {**good["Config"], "Cmd": ["python3", "-I", "-m", "toolrunner.runner"]},
           "Mounts": [*good["Mounts"], {"Source": "/var/run/docker.sock", "Destination": "/d.sock"}]}
    problems = "\n".join(host_config_mismatches(bad, kw))
    assert "CapDrop" in problems and "Privileged" in problems and "docker.sock" in problems
    assert "CapAdd" in problems and "Cmd" in problems


def test_runner_identity_check_names_every_difference() -> None:
    """The host refuses a runner whose hello shows another uid, an extra or inheritable capability, a dumpable
    process, tool processes that may write under /proc, or another isolation mode than asked; a correct one
    passes."""
    good = {"mode": "uid", "uid": [999] * 4, "cap_eff": 0xE0, "cap_inh": 0, "cap_amb": 0, "no_new_privs": 1,
            "dumpable": False, "proc_writes": "denied"}
    assert runner_identity_mismatches(good, "uid") == []
    bad = {**good, "uid": [0, 0, 0, 0], "cap_eff": 0xE0 | (1 << 19), "cap_inh": 0xE0, "dumpable": True,
           "proc_writes": "allowed"}
    problems = "\n".join(runner_identity_mismatches(bad, "shared"))
    for key in ("mode", "uid", "cap_eff", "cap_inh", "dumpable", "proc_writes"):
        assert f"runner {key}:" in problems
    assert runner_identity_mismatches(None, "uid")


def test_runner_egress_check_wants_a_listening_forwarder_exactly_under_allowlist() -> None:
    """Under allowlist the runner must report its forwarder listening (a failed one would leave every tool
    without network for no visible reason); under none or open no proxy socket may have reached it."""
    assert runner_egress_mismatches({"forwarder": "listening"}, "allowlist") == []
    assert runner_egress_mismatches({"forwarder": "none"}, "none") == []
    assert runner_egress_mismatches({"forwarder": "none"}, "open") == []
    assert "reported 'failed'" in runner_egress_mismatches({"forwarder": "failed"}, "allowlist")[0]
    assert runner_egress_mismatches({"forwarder": "listening"}, "none")
    assert runner_egress_mismatches(None, "allowlist")  # a runner that does not say
