"""Workspace quotas against the real engine and kernel: a loop-mounted ext4 image per tenant workspace stops a
writer at its size and inode count, the host names ``limit: "disk"`` from its own statvfs, the tenant recovers
after deleting, a restarted manager reuses the mount (and grows it), and removal frees the loop device."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sandbox_support import Harness, make_config

from policies.loader import policy_for
from policies.model import Policy
from toolrunner.config import quota_image
from toolrunner.mounts import loop_backing_file, mounted_at, mounts
from toolrunner.quota import release_all

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]


def tiny(disk_mb: int = 24, inodes: int = 2048) -> Policy:
    return Policy.model_validate({**policy_for("ci").model_dump(), "name": f"disk{disk_mb}",
                                  "disk_mb": disk_mb, "disk_inodes": inodes})


def loops_of(image: Path) -> list[str]:
    """The loop devices backed by ``image`` (``losetup -j``), as the kernel lists them."""
    out = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True, check=True).stdout
    return [line.split(":", 1)[0] for line in out.splitlines() if line.strip()]


def loops_gone(image: Path, within_s: float = 10) -> bool:
    """Whether ``image`` has no loop device, polled against a deadline: a device detached while a dying
    container's mount namespace still held it is freed by the kernel's asynchronous rundown a moment later."""
    deadline = time.monotonic() + within_s
    while loops_of(image) and time.monotonic() < deadline:
        time.sleep(0.05)  # poll interval against the deadline
    return loops_of(image) == []


def mounts_at(point: Path) -> int:
    return sum(1 for m in mounts() if m.point == point)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def harness_factory(sandbox_image: str, data_dir: Path) -> Iterator[Any]:
    """Managers for one test, closed at its end; then no quota mount or loop device of the test may be left
    (the teardown releases what it finds, so a failure here leaks nothing either)."""
    made: list[Harness] = []

    def make(data: Path, policies: dict[str, Policy] | None = None, **overrides: Any) -> Harness:
        made.append(Harness(make_config(data, sandbox_image, **overrides), policies))
        return made[-1]

    yield make
    for h in reversed(made):
        h.close()
    leftover = release_all(data_dir)
    images = list(data_dir.rglob("quota/*.ext4"))
    assert leftover == [], f"quota mounts left behind: {leftover}"
    assert all(loops_gone(i) for i in images), [loops_of(i) for i in images]


def test_writer_stopped_at_limit_names_disk_and_recovers(harness_factory: Any, data_dir: Path) -> None:
    """A 24 MiB workspace: `dd` of 100 MiB stops with ENOSPC and the host says limit "disk"; after deleting,
    the same tenant writes again and the result names no limit; the sandbox's own text decides nothing."""
    h = harness_factory(data_dir, policies={"qa": tiny()})
    out = h.bash("qa", "dd if=/dev/zero of=big bs=1M count=100 2>&1; echo rc=$?").result
    assert "No space left on device" in out.output and out.limit == "disk", out
    workspace = data_dir / "workspaces" / "qa"
    st = os.statvfs(workspace)
    assert st.f_blocks * st.f_frsize <= 24 * 1024 * 1024  # the host's own view of the bound
    assert (workspace / "big").stat().st_size < 24 * 1024 * 1024
    info = h.run(h.manager.info("qa"))["workspace"]
    assert info["quota"]["enforced"] is True and info["quota"]["inodes"] >= 2048
    assert info["quota"]["used_bytes"] > 16 * 1024 * 1024 and info["writable"] is True

    again = h.bash("qa", "rm big && dd if=/dev/zero of=small bs=1M count=8 2>&1 && echo wrote").result
    assert "wrote" in again.output and again.exit_code == 0 and again.limit is None, again
    lie = h.bash("qa", "echo 'No space left on device'; exit 1").result
    assert lie.limit is None and lie.exit_code == 1


def test_inode_limit_and_write_file(harness_factory: Any, data_dir: Path) -> None:
    """Creating files until the inode table is used up stops with limit "disk"; write_file into a full
    workspace fails with RESOURCE_LIMIT and limit "disk"; both recover once files are removed."""
    h = harness_factory(data_dir, policies={"qi": tiny(24, 1024)})
    many = h.bash("qi", "mkdir d; i=0; while : > d/f$i 2>/dev/null; do i=$((i+1)); done; echo made=$i").result
    made = int(many.output.strip().rsplit("made=", 1)[1])
    assert 900 <= made <= 1100 and many.limit == "disk", many
    full = h.call("qi", "write_file", {"path": "note.txt", "content": "hello"}).result
    assert full.error is not None and full.error.code == "RESOURCE_LIMIT" and full.limit == "disk", full
    assert h.bash("qi", "rm -r d").result.exit_code == 0
    ok = h.call("qi", "write_file", {"path": "note.txt", "content": "hello"}).result
    assert ok.error is None and ok.limit is None

    # Fill the blocks, then ask write_file for more than is left: the host's statvfs names the disk.
    h.bash("qi", "dd if=/dev/zero of=fill bs=1M count=100 2>/dev/null; rm -f note.txt")
    big = h.call("qi", "write_file", {"path": "more.txt", "content": "y" * (3 * 1024 * 1024)}).result
    assert big.error is not None and big.error.code == "RESOURCE_LIMIT" and big.limit == "disk", big


def test_restart_reuses_mount_grows_it_and_remove_frees_loop(harness_factory: Any, data_dir: Path) -> None:
    """A second manager on the same data directory finds the mounted image instead of stacking another and
    keeps the files; a policy that grew is applied (online where the kernel lets root resize, else when the
    sandbox is next removed); removing the sandbox unmounts and frees the loop device, and the next call
    mounts the same image again, grown, with the files in it."""
    first = harness_factory(data_dir, policies={"qr": tiny(24)})
    assert first.bash("qr", "echo kept > kept.txt").result.exit_code == 0
    workspace = data_dir / "workspaces" / "qr"
    image = quota_image(first.config, "qr")
    assert mounts_at(workspace) == 1 and len(loops_of(image)) == 1
    first.run(first.manager.shutdown())  # a server stop: containers and mounts stay for the next one

    second = harness_factory(data_dir, policies={"qr": tiny(48)}, server_id=first.config.server_id)
    adopted = second.run(second.manager.adopt_or_reap())
    assert len(adopted["adopted"]) == 1
    assert mounts_at(workspace) == 1 and len(loops_of(image)) == 1  # found, not stacked
    assert second.bash("qr", "cat kept.txt").result.output == "kept\n"
    quota = second.run(second.manager.info("qr"))["workspace"]["quota"]
    assert quota["enforced"] is True
    assert quota["bytes"] > 40 * 1024 * 1024 or "grows when the tenant's sandbox is next removed" in quota["reason"]

    second.run(second.manager.remove("qr"))
    assert mounted_at(workspace) is None and loops_gone(image) and image.exists()
    back = second.bash("qr", "cat kept.txt; df -k --output=size /workspace | tail -1").result
    assert back.output.startswith("kept\n") and int(back.output.split()[-1]) > 40 * 1024, back
    assert mounts_at(workspace) == 1 and len(loops_of(image)) == 1
    assert loop_backing_file(mounted_at(workspace).source) == image  # type: ignore[union-attr]


def test_existing_files_move_in_and_foreign_mount_is_not_stacked(harness_factory: Any, data_dir: Path) -> None:
    """Files a workspace had before its quota count against it (moved into the image); a workspace that is
    already another mount is left alone and reported as not enforced, with the reason, and still works."""
    old = data_dir / "workspaces" / "qm"
    old.mkdir(parents=True)
    (old / "before.txt").write_text("from before the quota\n")
    h = harness_factory(data_dir, policies={"qm": tiny(), "qf": tiny()})
    assert h.bash("qm", "cat before.txt").result.output == "from before the quota\n"
    assert mounts_at(old) == 1

    foreign = data_dir / "workspaces" / "qf"
    foreign.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(foreign)], check=True)
    try:
        assert h.bash("qf", "echo ok").result.output == "ok\n"
        quota = h.run(h.manager.info("qf"))["workspace"]["quota"]
        assert quota["enforced"] is False and "already a mount point" in quota["reason"]
        assert mounts_at(foreign) == 1
        h.run(h.manager.remove("qf"))
        assert mounts_at(foreign) == 1  # not ours: never unmounted by the quota code
    finally:
        subprocess.run(["umount", str(foreign)], check=True)


def test_owner_workspace_exempt_by_default(harness_factory: Any, data_dir: Path) -> None:
    """The owner's workspace (a person's directory) gets no quota filesystem unless the setting asks."""
    h = harness_factory(data_dir, policies={"owner": tiny()})
    os.chown(h.config.owner_workspace, 1000, 1000)  # a person's directory (uid 1000), not root's
    assert h.bash("owner", "echo hi > hi.txt").result.exit_code == 0
    assert mounted_at(h.config.owner_workspace.resolve()) is None
    quota = h.run(h.manager.info("owner"))["workspace"]["quota"]
    assert quota["enforced"] is False and "exempt" in quota["reason"]

    opted = harness_factory(data_dir / "opted", policies={"owner": tiny()}, owner_workspace_quota=True)
    os.chown(opted.config.owner_workspace, 1000, 1000)
    out = opted.bash("owner", "dd if=/dev/zero of=big bs=1M count=100 2>&1").result
    assert out.limit == "disk" and mounts_at(opted.config.owner_workspace.resolve()) == 1
    assert opted.config.owner_workspace.stat().st_uid == 1000  # the filesystem's root is still the person's


def test_container_removed_beyond_stopped_cap_releases_its_mount(harness_factory: Any, data_dir: Path) -> None:
    """A tenant whose stopped container is removed beyond the stopped-container cap keeps no mount or loop
    device (they stay bounded by the container caps); its next call mounts the image again, files intact."""
    h = harness_factory(data_dir, policies={"qs": tiny()}, idle_timeout_s=1, max_stopped_containers=0)
    assert h.bash("qs", "echo kept > kept.txt").result.exit_code == 0
    workspace, image = data_dir / "workspaces" / "qs", quota_image(h.config, "qs")
    assert mounts_at(workspace) == 1
    deadline = time.monotonic() + 30
    while mounts_at(workspace) and time.monotonic() < deadline:
        time.sleep(0.1)  # poll interval against the deadline
    assert mounts_at(workspace) == 0 and loops_gone(image)
    assert h.bash("qs", "cat kept.txt").result.output == "kept\n" and mounts_at(workspace) == 1


def image_blocks_mib(image: Path) -> float:
    """What the sparse image really takes on the host's disk, in MiB (512-byte blocks, as ``du`` counts)."""
    return image.stat().st_blocks * 512 / (1024 * 1024)


def test_deleting_files_gives_the_host_its_blocks_back(harness_factory: Any, data_dir: Path) -> None:
    """The image is mounted with ``discard``: 40 MiB written then deleted in the sandbox are punched out of
    the sparse image on the host (its allocated blocks drop), so a tenant who writes and deletes cannot make
    its image only ever grow."""
    h = harness_factory(data_dir, policies={"qd": tiny(64, 2048)})
    image = quota_image(h.config, "qd")
    wrote = h.bash("qd", "dd if=/dev/urandom of=big bs=1M count=40 2>/dev/null && sync && echo ok").result
    assert wrote.output == "ok\n", wrote
    assert image_blocks_mib(image) > 40, image_blocks_mib(image)
    mount = mounted_at(data_dir / "workspaces" / "qd")
    assert mount is not None and "discard" in mount.super_options.split(","), mount
    assert h.bash("qd", "rm big && sync && echo gone").result.output == "gone\n"
    deadline = time.monotonic() + 20
    while image_blocks_mib(image) > 20 and time.monotonic() < deadline:
        time.sleep(0.1)  # ext4 discards when the journal commits: poll against the deadline
    assert image_blocks_mib(image) < 20, image_blocks_mib(image)


def test_a_new_tenant_is_refused_when_the_data_disk_would_fall_below_its_reserve(
        sandbox_image: str, tmp_path: Path) -> None:
    """On a small data disk (a 96 MiB tmpfs) with a 16 MiB reserve, a tenant whose 24 MiB image fits is
    admitted; once the disk is nearly full a NEW tenant is refused with SANDBOX_DISK_FULL (503), no image is
    made for it, the existing tenant keeps working; when space is freed the new tenant is admitted."""
    from sandbox_support import Harness, make_config

    from toolrunner.errors import SandboxDiskFull

    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(small)], check=True)
    h: Harness | None = None
    try:
        h = Harness(make_config(small, sandbox_image, data_disk_reserve_mb=16),
                    policies={"qa": tiny(24), "qb": tiny(24)})
        assert h.bash("qa", "echo a > a.txt && echo ok").result.output == "ok\n"
        st = os.statvfs(small)
        filler = small / "filler"
        with open(filler, "wb") as f:  # leave 30 MiB free: a 24 MiB image would leave 6 < 16
            f.write(b"\0" * (st.f_bavail * st.f_frsize - 30 * 1024 * 1024))
        with pytest.raises(SandboxDiskFull) as refused:
            h.bash("qb", "echo b")
        assert refused.value.code == "SANDBOX_DISK_FULL" and refused.value.status == 503
        assert "reserve of 16 MiB" in refused.value.message, refused.value.message
        assert not quota_image(h.config, "qb").exists()
        assert h.bash("qa", "cat a.txt").result.output == "a\n"  # an existing image is never refused
        filler.unlink()
        assert h.bash("qb", "echo b").result.output == "b\n"
    finally:
        if h is not None:
            h.close()
        release_all(small)
        subprocess.run(["umount", str(small)], check=True)


def test_a_restart_releases_the_mounts_of_the_containers_it_removes(harness_factory: Any, docker_client: Any,
                                                                     data_dir: Path) -> None:
    """Stopped containers found at start (more than the caps keep) are removed by ``adopt_or_reap``, and
    their quota mounts and loop devices go with them instead of leaking, untracked; the adopted tenant's
    mount stays, and a released tenant's next call mounts its image again with its files."""
    policies = {t: tiny() for t in ("r1", "r2", "r3")}
    first = harness_factory(data_dir, policies=policies)
    for t in policies:
        assert first.bash(t, f"echo {t} > mine.txt && echo ok").result.output == "ok\n"
    first.run(first.manager.shutdown())
    rows = docker_client.api.containers(all=True, filters={"label": f"openanalyst.server={first.config.instance_id}"})
    by_tenant = {r["Labels"]["openanalyst.tenant"]: r["Id"] for r in rows}
    for t in ("r2", "r3"):  # stopped behind the server's back, as after a host reboot or a crash
        docker_client.api.stop(by_tenant[t], timeout=0)
    images = {t: quota_image(first.config, t) for t in policies}
    assert all(len(loops_of(i)) == 1 for i in images.values())

    second = harness_factory(data_dir, policies=policies, server_id=first.config.server_id, max_stopped_containers=0)
    outcome = second.run(second.manager.adopt_or_reap())
    assert outcome["adopted"] == [by_tenant["r1"]] and sorted(outcome["removed"]) == sorted(
        [by_tenant["r2"], by_tenant["r3"]])
    for t in ("r2", "r3"):
        assert mounts_at(data_dir / "workspaces" / t) == 0 and loops_gone(images[t]), t
    assert mounts_at(data_dir / "workspaces" / "r1") == 1 and len(loops_of(images["r1"])) == 1
    assert second.bash("r2", "cat mine.txt").result.output == "r2\n"
