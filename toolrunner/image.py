"""Build the sandbox image, named by a hash of what goes into it, offline if need be.

The tag ``openanalyst/sandbox:<hash12>`` hashes the image sources (``sandbox_images/Dockerfile``,
``packages.txt``) and the runner files, so a changed runner means a new image and the manager retires
containers of the old one. The base is a public image when one is present or can be pulled; where no registry
is reachable the base is made locally with debootstrap (``sandbox_images/build-base.sh``) and imported as
``openanalyst/sandbox-base:<hash12>``. Only this module builds images; docker-py stays untyped inside it and
every engine call is bounded by the client's HTTP timeout plus an overall deadline.

Run ``python -m toolrunner.image`` to build with progress on stdout (what CI calls).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from toolrunner.errors import SandboxBackendUnavailable, SandboxImageUnavailable

IMAGE_REPO = "openanalyst/sandbox"
BASE_REPO = "openanalyst/sandbox-base"
DEFAULT_BASE_IMAGE = "python:3.11-slim-bookworm"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
BUILD_READ_TIMEOUT_S = 900  # longest silence allowed while a RUN step works (apt on a slow mirror)
BUILD_DEADLINE_S = 1800.0
BASE_DEADLINE_S = 1200.0
LOCK_WAIT_S = 2400.0
_CONTEXT_MTIME = 1_700_000_000  # fixed, so identical sources give an identical context and a cache hit
_BASE_CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["/bin/bash"]',
]

Progress = Callable[[str], None]


class ImageUnavailable(SandboxImageUnavailable):
    """The sandbox image cannot be built here; ``reason`` says why (code SANDBOX_IMAGE_UNAVAILABLE)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the sandbox image cannot be built: {reason}")
        self.reason = reason


def repo_root() -> Path:
    """Where ``toolrunner/`` and ``sandbox_images/`` sit side by side (a checkout or site-packages)."""
    return Path(__file__).resolve().parent.parent


def context_files(root: Path | None = None) -> list[tuple[str, Path]]:
    """(name in the build context, file) for everything the image is built from, in a stable order."""
    root = root or repo_root()
    images, runner = root / "sandbox_images", root / "toolrunner"
    files = [("Dockerfile", images / "Dockerfile"), ("packages.txt", images / "packages.txt"),
             ("toolrunner/protocol.py", runner / "protocol.py")]
    for path in sorted((runner / "runner").rglob("*.py")):
        if "__pycache__" not in path.parts:
            files.append((path.relative_to(root).as_posix(), path))
    return files


def _digest(named: list[tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for name, data in named:
        h.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


def read_sources(root: Path | None = None) -> list[tuple[str, bytes]]:
    """Names and contents of everything the image is built from, read once so tag and context agree."""
    try:
        return [(name, path.read_bytes()) for name, path in context_files(root)]
    except OSError as exc:
        raise ImageUnavailable(f"an image source is unreadable: {exc}") from exc


def source_hash(root: Path | None = None) -> str:
    """sha256 over the names and contents of the image's sources and the runner files."""
    return _digest(read_sources(root))


def _tag_for(sources: list[tuple[str, bytes]]) -> str:
    return f"{IMAGE_REPO}:{_digest(sources)[:12]}"


def image_tag(root: Path | None = None) -> str:
    """The sandbox image's tag for the current sources, e.g. ``openanalyst/sandbox:3f2a9c0d11be``."""
    return _tag_for(read_sources(root))


def base_tag(root: Path | None = None, suite: str = SUITE) -> str:
    """Tag of the locally made base: a hash of the package list, the build script and the suite."""
    images = (root or repo_root()) / "sandbox_images"
    named = [(n, (images / n).read_bytes()) for n in ("packages.txt", "build-base.sh")]
    return f"{BASE_REPO}:{_digest([*named, ('suite', suite.encode())])[:12]}"


def _engine(what: str, fn: Callable[[], Any]) -> Any:
    """One docker-py call; engine trouble becomes a typed error (the client's timeout bounds it)."""
    try:
        return fn()
    except docker.errors.NotFound:
        raise
    except docker.errors.APIError as exc:
        raise ImageUnavailable(f"{what}: {exc.explanation or exc}") from exc
    except (requests.exceptions.RequestException, docker.errors.DockerException, OSError) as exc:
        raise SandboxBackendUnavailable(f"the container engine failed {what}: {exc}") from exc


def image_exists(client: Any, tag: str) -> bool:
    """Whether the engine has an image by this name."""
    try:
        _engine(f"inspecting {tag}", lambda: client.api.inspect_image(tag))
    except docker.errors.NotFound:
        return False
    return True


def debian_mirror(suite: str = SUITE, apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror the host's apt uses for ``suite`` (one-line or deb822 sources), or the default."""
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list")),
             *sorted((apt_dir / "sources.list.d").glob("*.sources"))]
    for path in files:
        with contextlib.suppress(OSError):
            text = path.read_text(errors="replace")
            if path.suffix == ".sources":
                for stanza in re.split(r"\n\s*\n", text):
                    fields: dict[str, str] = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
                    types, suites = fields.get("Types", "").split(), fields.get("Suites", "").split()
                    wanted = "deb" in types and suite in suites
                    if wanted and fields.get("Enabled", "yes").lower() != "no" and fields.get("URIs"):
                        return fields["URIs"].split()[0].rstrip("/")
            else:
                for line in text.splitlines():
                    m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
                    if m and m.group(2) == suite:
                        return m.group(1).rstrip("/")
    return DEFAULT_MIRROR


def _try_pull(client: Any, ref: str, progress: Progress, deadline: float) -> bool:
    """Pull ``ref``; False when no registry answers (fails within a second where there is no network)."""
    progress(f"pulling {ref}")
    try:
        for event in client.api.pull(ref, stream=True, decode=True):
            if "error" in event:
                progress(f"pull failed: {event['error']}")
                return False
            if "progress" not in event and "status" in event:
                progress(f"{event.get('id', '')} {event['status']}".strip())
            if time.monotonic() > deadline:
                progress("pull took too long; giving up on it")
                return False
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        progress(f"pull failed: {getattr(exc, 'explanation', None) or exc}")
        return False
    return image_exists(client, ref)


def _run_logged(argv: list[str], progress: Progress, timeout_s: float) -> int:
    """Run a command, passing each output line to ``progress``; killed when ``timeout_s`` passes."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", stdin=subprocess.DEVNULL)
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip():
                progress(line.rstrip())
        return proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def make_local_base(client: Any, progress: Progress, *, root: Path | None = None) -> str:
    """Debootstrap the base and import it (cached by tag); needs root, debootstrap and a Debian mirror."""
    root = root or repo_root()
    tag = base_tag(root)
    if image_exists(client, tag):
        progress(f"local base {tag} already present")
        return tag
    mirror = debian_mirror()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="openanalyst-base-", dir="/var/tmp") as tmp:
        out = Path(tmp) / "rootfs.tar"
        script = root / "sandbox_images" / "build-base.sh"
        try:
            rc = _run_logged(["bash", str(script), str(out), mirror, SUITE], progress, BASE_DEADLINE_S)
        except OSError as exc:
            raise ImageUnavailable(f"cannot run {script}: {exc}") from exc
        if rc != 0 or not out.exists():
            raise ImageUnavailable(f"making the local base failed (exit {rc}); needs root, debootstrap "
                                   f"(bash .ci/install-system.sh) and the mirror {mirror}")
        progress(f"importing {tag}")
        repo, _, name = tag.partition(":")
        with out.open("rb") as f:
            answer = _engine("importing the base", lambda: client.api.import_image(
                src=f, repository=repo, tag=name, changes=_BASE_CHANGES))
    if not image_exists(client, tag):
        raise ImageUnavailable(f"importing the base {tag} failed: {str(answer).strip()[-500:]}")
    progress(f"local base {tag} made in {time.monotonic() - started:.0f} s")
    return tag


def choose_base(client: Any, progress: Progress, base_image: str | None = None) -> str:
    """A present or pullable public base, else the local debootstrap base."""
    wanted = base_image or DEFAULT_BASE_IMAGE
    if image_exists(client, wanted) or _try_pull(client, wanted, progress, time.monotonic() + 600):
        return wanted
    if base_image is not None:
        raise ImageUnavailable(f"the base image {base_image} is neither present nor pullable")
    progress(f"{wanted} is unavailable (no registry reachable?); using a local debootstrap base")
    return make_local_base(client, progress)


def build_context(sources: list[tuple[str, bytes]] | None = None) -> bytes:
    """The tar the engine builds from: Dockerfile, package list and runner files only, never the repo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        # An empty package marker: the host's toolrunner/__init__.py may import host-only modules.
        for name, data in [("toolrunner/__init__.py", b""), *(sources or read_sources())]:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), _CONTEXT_MTIME, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _build_events(client: Any, tag: str, base: str, context: bytes) -> Iterator[dict[str, Any]]:
    labels = {"openanalyst.image_hash": tag.rsplit(":", 1)[1], "openanalyst.base_image": base}
    stream = _engine("starting the build", lambda: client.api.build(
        fileobj=io.BytesIO(context), custom_context=True, tag=tag, buildargs={"BASE_IMAGE": base},
        labels=labels, rm=True, forcerm=True, pull=False, decode=True, timeout=BUILD_READ_TIMEOUT_S))
    try:
        yield from stream
    except (requests.exceptions.RequestException, docker.errors.DockerException, OSError) as exc:
        raise SandboxBackendUnavailable(f"the container engine failed during the build: {exc}") from exc


def build_sandbox_image(client: Any, *, progress: Progress, base_image: str | None = None) -> str:
    """Build ``image_tag()`` from the chosen base, streaming build output lines to ``progress``."""
    sources = read_sources()
    tag = _tag_for(sources)
    base = choose_base(client, progress, base_image)
    progress(f"building {tag} FROM {base}")
    started = time.monotonic()
    for event in _build_events(client, tag, base, build_context(sources)):
        if "error" in event:
            raise ImageUnavailable(f"docker build failed: {str(event['error']).strip()}")
        for line in str(event.get("stream", "")).splitlines():
            if line.strip():
                progress(line.rstrip())
        if time.monotonic() - started > BUILD_DEADLINE_S:
            raise ImageUnavailable(f"the build took longer than {BUILD_DEADLINE_S:.0f} s")
    if not image_exists(client, tag):
        raise ImageUnavailable(f"the build finished without producing {tag}")
    progress(f"built {tag} in {time.monotonic() - started:.1f} s")
    return tag


@contextlib.contextmanager
def _build_lock(timeout_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """One build per machine at a time: parallel test runs would otherwise debootstrap twice."""
    path = Path(tempfile.gettempdir()) / "openanalyst-sandbox-image.lock"
    with path.open("a") as f:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ImageUnavailable(f"another build held {path} for {timeout_s:.0f} s") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_sandbox_image(client: Any, progress: Progress) -> str:
    """The current sandbox image's tag, building it first only when the engine does not have it."""
    tag = image_tag()
    if image_exists(client, tag):
        return tag
    with _build_lock():
        if image_exists(client, tag):  # built by another process while we waited
            return tag
        return build_sandbox_image(client, progress=progress)


def ensure_default_image(progress: Progress) -> str:
    """``ensure_sandbox_image`` with the engine from the environment (what the server calls at start)."""
    try:
        client = docker.from_env(timeout=120, max_pool_size=8)
    except docker.errors.DockerException as exc:
        raise SandboxBackendUnavailable(f"the Docker engine is not reachable: {exc}") from None
    try:
        return ensure_sandbox_image(client, progress)
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m toolrunner.image [--force] [--base-image REF] [--print-tag]``."""
    parser = argparse.ArgumentParser(prog="python -m toolrunner.image",
                                     description="Build the sandbox image.")
    parser.add_argument("--force", action="store_true", help="build even if the tag exists")
    parser.add_argument("--base-image", help=f"base image (default {DEFAULT_BASE_IMAGE}, else a local base)")
    parser.add_argument("--print-tag", action="store_true", help="print the tag for the current sources")
    args = parser.parse_args(argv)
    if args.print_tag:
        print(image_tag())
        return 0
    def say(line: str) -> None:
        print(line, flush=True)

    try:
        client = docker.from_env(timeout=120, max_pool_size=8)
        if args.force or args.base_image:
            with _build_lock():
                tag = build_sandbox_image(client, progress=say, base_image=args.base_image)
        else:
            tag = ensure_sandbox_image(client, say)
    except (SandboxImageUnavailable, SandboxBackendUnavailable, docker.errors.DockerException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
