"""Build an environment's image once per content hash: fetch on the host, build offline, check, then tag.

The image is built under a provisional tag, checked (``harden.check``) and only then tagged
``openanalyst/env:<hash16>``: a present final tag always means a checked image, and a failed check removes
the image. One build per hash at a time across processes (a file lock); the second asker finds the tag.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
import requests.exceptions

from toolrunner.envbuild import dockerfile, fetch, harden
from toolrunner.envbuild.errors import EnvironmentBuildFailed, tail
from toolrunner.envbuild.spec import Definition, content_hash
from toolrunner.errors import SandboxBackendUnavailable

ENV_REPO = "openanalyst/env"
PENDING_REPO = "openanalyst/env-unchecked"
BUILD_READ_TIMEOUT_S = 900
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Sources:
    """Where the host fetches packages (None: the tool's own configuration, e.g. ``PIP_INDEX_URL``)."""

    pip_index_url: str | None = None
    npm_registry: str | None = None


@dataclass(frozen=True)
class Built:
    """An environment image ready to run: its tag, content hash, engine id, and whether it was built now."""

    tag: str
    hash: str
    image_id: str
    built: bool


def env_tag(digest: str) -> str:
    return f"{ENV_REPO}:{digest[:16]}"


@contextlib.contextmanager
def _lock(digest: str) -> Iterator[None]:
    """One build per hash on this machine; a waiter blocks until the builder is done (builds have deadlines)."""
    path = Path(tempfile.gettempdir()) / f"openanalyst-env-{digest[:16]}.lock"
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class EnvironmentBuilder:
    """Builds and finds environment images on one engine; keeps each base's probe so it runs once."""

    def __init__(self, client: Any, sources: Sources, *, labels: dict[str, str] | None = None) -> None:
        self.client = client
        self.sources = sources
        self.labels = {"openanalyst.envbuild": "1", **(labels or {})}
        self._base_facts: dict[str, dict[str, Any]] = {}

    def _engine(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except docker.errors.NotFound:
            raise
        except docker.errors.APIError as exc:
            raise EnvironmentBuildFailed(f"{what}: {exc.explanation or exc}") from exc
        except (requests.exceptions.RequestException, docker.errors.DockerException, OSError) as exc:
            raise SandboxBackendUnavailable(f"the container engine failed {what}: {exc}") from exc

    def _image_id(self, ref: str) -> str | None:
        try:
            return str(self._engine(f"inspecting {ref}", lambda: self.client.api.inspect_image(ref))["Id"])
        except docker.errors.NotFound:
            return None

    def key(self, defn: Definition, base: str) -> str:
        """The content hash this definition has on ``base`` now (the base's id, not its tag, counts)."""
        base_id = self._image_id(base)
        if base_id is None:
            raise EnvironmentBuildFailed(f"the base image {base} is not present")
        installer = hashlib.sha256(fetch.pip_installer().read_bytes()).hexdigest() if defn.python else ""
        return content_hash(defn, base_id, installer)

    def find(self, defn: Definition, base: str) -> Built | None:
        """The checked image of this definition on ``base`` if the engine has it (no build)."""
        if defn.empty:
            base_id = self._image_id(base)
            return Built(base, "", base_id, False) if base_id else None
        digest = self.key(defn, base)
        image_id = self._image_id(env_tag(digest))
        return Built(env_tag(digest), digest, image_id, False) if image_id else None

    def ensure(self, defn: Definition, base: str, progress: Progress) -> Built:
        """The image, built (and checked) first when the engine does not have it."""
        found = self.find(defn, base)
        if found is not None:
            progress(f"{found.tag} already built")
            return found
        digest = self.key(defn, base)
        with _lock(digest):
            found = self.find(defn, base)
            if found is not None:
                progress(f"{found.tag} was built meanwhile")
                return found
            return self._build(defn, base, digest, progress)

    def _build(self, defn: Definition, base: str, digest: str, progress: Progress) -> Built:
        started = time.monotonic()
        base_id = self._image_id(base) or base
        pending = f"{PENDING_REPO}:{digest[:16]}"
        with tempfile.TemporaryDirectory(prefix="openanalyst-env-", dir="/var/tmp") as tmp:
            work = Path(tmp)
            has_debs = pip_wheel = None
            if defn.debian:
                progress(f"fetching Debian packages: {' '.join(defn.debian)}")
                status = self._engine("reading the base's dpkg status", lambda: fetch.base_dpkg_status(
                    self.client, base_id, self.labels))
                has_debs = bool(fetch.fetch_debian(defn.debian, status, work / "debs", progress)) or None
            if defn.python:
                progress(f"fetching Python packages: {' '.join(defn.python)}")
                fetch.fetch_python(defn.python, work / "python", progress, self.sources.pip_index_url)
                pip_wheel = fetch.pip_installer().name
            if defn.npm:
                progress(f"fetching npm packages: {' '.join(defn.npm)}")
                fetch.fetch_npm(defn.npm, work / "npm", progress, self.sources.npm_registry)
            text = dockerfile.render(defn, base_id, debs=bool(has_debs), pip_wheel=pip_wheel, npm=bool(defn.npm))
            context = work / "context.tar"
            dockerfile.write_context(work, text, context)
            progress(f"building {env_tag(digest)} offline (network none)")
            self._docker_build(context, pending, digest, base_id, progress)
        progress("checking the image keeps the sandbox's hardening")
        try:
            facts = self._base_facts.get(base_id)
            self._base_facts[base_id] = self._engine("checking the image", lambda: harden.check(
                self.client, base_id, pending, self.labels, facts))
            self._engine("tagging the image", lambda: self.client.api.tag(pending, ENV_REPO, digest[:16]))
        finally:
            with contextlib.suppress(docker.errors.DockerException, requests.exceptions.RequestException):
                self.client.api.remove_image(pending, force=True)  # the untag only, once the final tag exists
        image_id = self._image_id(env_tag(digest)) or ""
        progress(f"built {env_tag(digest)} in {time.monotonic() - started:.1f} s")
        return Built(env_tag(digest), digest, image_id, True)

    def _docker_build(self, context: Path, tag: str, digest: str, base_id: str, progress: Progress) -> None:
        labels = {"openanalyst.env_hash": digest, "openanalyst.env_base": base_id}
        lines: list[str] = []
        with context.open("rb") as f:
            stream = self._engine("starting the build", lambda: self.client.api.build(
                fileobj=f, custom_context=True, tag=tag, labels=labels, rm=True, forcerm=True, pull=False,
                decode=True, network_mode="none", timeout=BUILD_READ_TIMEOUT_S))
            try:
                for event in stream:
                    if "error" in event:
                        lines.append(str(event["error"]).strip())
                        raise EnvironmentBuildFailed("the image build failed:\n" + tail("\n".join(lines)))
                    for line in str(event.get("stream", "")).splitlines():
                        if line.strip():
                            lines.append(line.rstrip())
                            del lines[:-200]
                            progress(line.rstrip())
            except (requests.exceptions.RequestException, docker.errors.DockerException, OSError) as exc:
                raise SandboxBackendUnavailable(f"the container engine failed during the build: {exc}") from exc
        if self._image_id(tag) is None:
            raise EnvironmentBuildFailed(f"the build finished without producing {tag}")
