"""The sandbox image: its content-hashed tag, its build context, what a hardened container of it can do."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

from toolrunner.image import (
    ImageUnavailable,
    base_tag,
    build_context,
    build_sandbox_image,
    context_files,
    debian_mirror,
    ensure_sandbox_image,
    image_tag,
    make_local_base,
    repo_root,
)

pytestmark = pytest.mark.docker

HARDENED: dict[str, Any] = {
    "read_only": True,
    "tmpfs": {"/tmp": "rw,nosuid,nodev,exec,size=64m,mode=1777"},
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "network_mode": "none",
}


def run(client: Any, image: str, command: list[str], **kwargs: Any) -> tuple[int, bytes, bytes]:
    """Run one container to completion (at most 60 s) and remove it; returns (exit code, stdout, stderr)."""
    container = client.api.create_container(
        image, command=command, labels={"openanalyst.test": "1"},
        host_config=client.api.create_host_config(**kwargs))
    cid = container["Id"]
    try:
        client.api.start(cid)
        code = client.api.wait(cid, timeout=60)["StatusCode"]
        out = client.api.logs(cid, stdout=True, stderr=False)
        err = client.api.logs(cid, stdout=False, stderr=True)
        return int(code), out, err
    finally:
        client.api.remove_container(cid, force=True)


def copy_sources(dest: Path) -> Path:
    """A private copy of everything the tag and the base tag are computed from."""
    root = repo_root()
    for _, path in context_files(root):
        target = dest / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    shutil.copyfile(root / "sandbox_images" / "build-base.sh", dest / "sandbox_images" / "build-base.sh")
    return dest


def test_tag_follows_runner_sources(tmp_path: Path) -> None:
    """Changing or adding a runner file changes the image tag; bytecode caches and the base script do not."""
    root = copy_sources(tmp_path)
    first = image_tag(root)
    assert first.startswith("openanalyst/sandbox:") and len(first.rsplit(":", 1)[1]) == 12
    assert image_tag(root) == first

    cache = root / "toolrunner" / "runner" / "__pycache__"
    cache.mkdir()
    (cache / "shell.cpython-311.pyc").write_bytes(b"junk")
    (root / "sandbox_images" / "build-base.sh").write_text("# changed\n")
    assert image_tag(root) == first

    runner_file = sorted((root / "toolrunner" / "runner").glob("*.py"))[0]
    runner_file.write_text(runner_file.read_text() + "\n# changed\n")
    second = image_tag(root)
    assert second != first

    (root / "toolrunner" / "runner" / "extra.py").write_text("X = 1\n")
    assert image_tag(root) not in (first, second)

    protocol = root / "toolrunner" / "protocol.py"
    before = image_tag(root)
    protocol.write_text(protocol.read_text() + "\n# changed\n")
    assert image_tag(root) != before


def test_base_tag_follows_package_list(tmp_path: Path) -> None:
    """The local base's tag changes with the package list, not with the runner."""
    root = copy_sources(tmp_path)
    first = base_tag(root)
    runner_file = sorted((root / "toolrunner" / "runner").glob("*.py"))[0]
    runner_file.write_text("# changed\n")
    assert base_tag(root) == first
    packages = root / "sandbox_images" / "packages.txt"
    packages.write_text(packages.read_text() + "jq\n")
    assert base_tag(root) != first
    assert base_tag(root, suite="trixie") != base_tag(root)


def test_build_context_holds_only_image_sources() -> None:
    """The context sent to the engine is the Dockerfile, package list and runner files, never the repo."""
    with tarfile.open(fileobj=io.BytesIO(build_context())) as tar:
        names = set(tar.getnames())
        marker = tar.extractfile("toolrunner/__init__.py")
        assert marker is not None and marker.read() == b""
    expected = {name for name, _ in context_files()} | {"toolrunner/__init__.py"}
    assert names == expected
    assert {"Dockerfile", "packages.txt", "toolrunner/protocol.py"} <= names
    assert all(n.startswith("toolrunner/") or n in ("Dockerfile", "packages.txt") for n in names)


def test_debian_mirror_reads_both_source_formats(tmp_path: Path) -> None:
    """The host's mirror for the suite is found in deb822 and one-line sources, skipping other suites."""
    (tmp_path / "sources.list.d").mkdir()
    assert debian_mirror("bookworm", tmp_path) == "http://deb.debian.org/debian"
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb http://security.example/debian-security bookworm-security main\n"
        "deb [arch=amd64] http://one.example/debian/ bookworm main\n")
    assert debian_mirror("bookworm", tmp_path) == "http://one.example/debian"
    (tmp_path / "sources.list").unlink()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb deb-src\nURIs: http://two.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n")
    assert debian_mirror("bookworm", tmp_path) == "http://two.example/debian"


def test_ensure_reuses_the_existing_image(docker_client: Any, sandbox_image: str) -> None:
    """With the image present, ensure returns its tag without building; the labels record the hash."""
    lines: list[str] = []
    assert ensure_sandbox_image(docker_client, lines.append) == sandbox_image == image_tag()
    assert lines == []
    labels = docker_client.api.inspect_image(sandbox_image)["Config"]["Labels"]
    assert labels["openanalyst.image_hash"] == sandbox_image.rsplit(":", 1)[1]


def test_unavailable_base_is_a_typed_error(docker_client: Any) -> None:
    """Asking for a base that is neither present nor pullable raises ImageUnavailable with the stable code."""
    with pytest.raises(ImageUnavailable) as info:
        build_sandbox_image(docker_client, progress=lambda _: None,
                            base_image="openanalyst-test/no-such-base:missing")
    assert info.value.code == "SANDBOX_IMAGE_UNAVAILABLE"
    assert "no-such-base" in info.value.reason


def test_failed_local_base_is_a_typed_error(docker_client: Any, tmp_path: Path) -> None:
    """A base script that fails gives ImageUnavailable naming the exit status, its output sent to progress."""
    root = copy_sources(tmp_path)
    (root / "sandbox_images" / "build-base.sh").write_text("echo 'debootstrap: no mirror' >&2\nexit 3\n")
    lines: list[str] = []
    with pytest.raises(ImageUnavailable) as info:
        make_local_base(docker_client, lines.append, root=root)
    assert "exit 3" in info.value.reason
    assert "debootstrap: no mirror" in lines


def test_image_has_user_tools_and_runner(docker_client: Any, sandbox_image: str) -> None:
    """The image starts as root (only to let the runner drop to its own uid) in /workspace, knows the runner's
    uid, the workspace group and the session uids, and has the agent's tools and the runner files."""
    files = [(name, path) for name, path in context_files() if name.startswith("toolrunner/")]
    script = ("id -u; id -u oa-runner; getent group sandbox | cut -d: -f3; id -u oa-s10999; "
              "stat -c %a:%g /workspace; pwd; echo $HOME; "
              "for c in bash rg git python3 node ps curl find grep; do "
              "command -v $c >/dev/null || echo NO $c; done; "
              "cd /opt/openanalyst && sha256sum " + " ".join(name for name, _ in files))
    code, out, err = run(docker_client, sandbox_image, ["bash", "-c", script], **HARDENED)
    assert code == 0, err
    lines = out.decode().splitlines()
    assert lines[:7] == ["0", "999", "1000", "10999", "2770:1000", "/workspace", "/tmp"]
    assert not [line for line in lines if line.startswith("NO ")]
    sums = dict(reversed(line.split(None, 1)) for line in lines[7:])
    assert sums == {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files}


def test_hardened_container_runs_python_and_node(docker_client: Any, sandbox_image: str) -> None:
    """Read-only root, tmpfs /tmp, no capabilities, no network: python3 and node run, /tmp is writable."""
    script = ("python3 -c 'import sys, toolrunner.protocol; print(\"py\", sys.version_info[0])' && "
              "node -e 'console.log(\"node\", 6 * 7)' && "
              "printf 'print(1 + 1)' > /tmp/s.py && python3 /tmp/s.py && "
              "git config --global user.name t && git -C /tmp init -q r && echo git-ok && "
              "(touch /usr/x 2>/dev/null && echo ROOT-WRITABLE || echo root-ro) && "
              "grep CapEff /proc/self/status")
    code, out, err = run(docker_client, sandbox_image, ["bash", "-c", script], **HARDENED)
    assert code == 0, err
    text = out.decode()
    assert text.splitlines()[:5] == ["py 3", "node 42", "2", "git-ok", "root-ro"]
    assert text.splitlines()[5].split() == ["CapEff:", "0000000000000000"]


def test_default_command_starts_the_runner(docker_client: Any, sandbox_image: str) -> None:
    """The image's own command starts the runner, whose first stdout frame is the protocol hello: it has
    dropped to uid 999 with only KILL, SETGID and SETUID, nothing inheritable, and is not dumpable."""
    if not (repo_root() / "toolrunner" / "runner" / "__main__.py").exists():
        pytest.fail("toolrunner/runner/__main__.py is missing: the image has no runner entry point")
    container = docker_client.api.create_container(
        sandbox_image, labels={"openanalyst.test": "1"}, stdin_open=False,
        host_config=docker_client.api.create_host_config(**HARDENED, cap_add=["KILL", "SETGID", "SETUID"]))
    cid = container["Id"]
    try:
        docker_client.api.start(cid)  # stdin is closed: the runner greets, sees EOF and exits
        docker_client.api.wait(cid, timeout=60)
        out = docker_client.api.logs(cid, stdout=True, stderr=False)
        err = docker_client.api.logs(cid, stdout=False, stderr=True)
    finally:
        docker_client.api.remove_container(cid, force=True)
    assert len(out) >= 4, err
    # The json-file log driver turns a length byte >= 0x80 into U+FFFD, so read the frame's JSON after it.
    start = out.index(b"{")
    assert start >= 4 and out[:2] == b"\0\0", out[:8]  # a hello shorter than 64 KiB
    hello, _ = json.JSONDecoder().raw_decode(out[start:].decode())
    assert hello["type"] == "hello" and hello["version"] == 1, hello
    assert hello["caps"].get("node") and hello["caps"].get("rg"), hello
    ident = hello["identity"]
    assert ident["mode"] == "uid" and ident["uid"] == [999, 999, 999, 999], ident
    assert ident["cap_eff"] == (1 << 5) | (1 << 6) | (1 << 7) and ident["cap_inh"] == 0 == ident["cap_amb"]
    assert ident["dumpable"] is False and ident["no_new_privs"] == 1 and ident["proc_writes"] == "denied"


def test_runner_without_its_capabilities_refuses_to_start(docker_client: Any, sandbox_image: str) -> None:
    """Without SETUID/SETGID the runner cannot separate itself from the tools: it says so and exits, rather
    than running tools as root or as itself."""
    code, out, err = run(docker_client, sandbox_image, ["python3", "-I", "-m", "toolrunner.runner",
                                                        "--isolation", "uid"], **HARDENED)
    assert code == 2 and out == b""
    assert b"cannot take the runner's identity" in err, err
