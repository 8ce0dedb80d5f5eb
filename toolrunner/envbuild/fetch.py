"""Fetch an environment's packages on the host into a build directory, so the build itself needs no network.

Debian: ``apt-get install --download-only`` with the *base image's* dpkg status as the state, into a private
archive directory: apt resolves exactly what the base lacks. Python: ``pip download --only-binary=:all:`` for
the image's interpreter (wheels only, so no package code runs on the host) plus the host's ``ensurepip`` pip
wheel as the installer. npm: resolved to a lockfile, checked to hold registry tarballs only, fetched exactly
(``npm ci``) and laid out offline with ``npm install --global --prefix <dir> --ignore-scripts`` (no package
code runs on the host: ``fetch_npm``); the laid-out tree is copied into the image. Each command's output goes to
``progress``; a failure raises ``EnvironmentBuildFailed`` with the tail of that output.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from toolrunner.envbuild.errors import EnvironmentBuildFailed, tail

Progress = Callable[[str], None]
FETCH_TIMEOUT_S = 900.0
PY_TARGET = ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--abi", "abi3",
             "--abi", "none", *[arg for tag in ("manylinux2014_x86_64", "manylinux_2_17_x86_64",
                                                "manylinux_2_28_x86_64", "manylinux_2_31_x86_64",
                                                "manylinux_2_34_x86_64", "manylinux_2_36_x86_64",
                                                "linux_x86_64") for arg in ("--platform", tag)]]


def run_step(what: str, argv: list[str], progress: Progress, *, env: dict[str, str] | None = None,
             cwd: Path | None = None, timeout_s: float = FETCH_TIMEOUT_S) -> None:
    """Run one fetch command (never a shell), its output lines to ``progress``; fail with its output's tail."""
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, errors="replace", env=env, cwd=cwd)
    except OSError as exc:
        raise EnvironmentBuildFailed(f"{what}: cannot run {argv[0]}: {exc}") from exc
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip():
                lines.append(line.rstrip())
                del lines[:-200]
                progress(line.rstrip())
        rc = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if rc != 0:
        raise EnvironmentBuildFailed(f"{what} failed (exit {rc}):\n{tail(chr(10).join(lines))}")


def base_dpkg_status(client: Any, base: str, labels: dict[str, str]) -> bytes:
    """The base image's ``/var/lib/dpkg/status``, read from a created (never started) container."""
    container = client.api.create_container(base, command=["true"], labels=labels, network_disabled=True)
    try:
        stream, _ = client.api.get_archive(container["Id"], "/var/lib/dpkg/status")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.extractfile("status")
            if member is None:
                raise EnvironmentBuildFailed("the base image has no dpkg status file")
            return member.read()
    finally:
        client.api.remove_container(container["Id"], force=True)


def fetch_debian(specs: tuple[str, ...], status: bytes, dest: Path, progress: Progress) -> list[str]:
    """Download the packages and every dependency the base lacks into ``dest``; the names of the .deb files."""
    state = dest.parent / "apt-state"
    (dest / "partial").mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    (state / "status").write_bytes(status)
    argv = ["apt-get", "install", "--download-only", "--yes", "--no-install-recommends",
            "-o", f"Dir::State::status={state / 'status'}", "-o", f"Dir::Cache::archives={dest}",
            "-o", f"Dir::Cache={state}", "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=",
            "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root", *specs]
    run_step("fetching the Debian packages (apt-get --download-only)", argv, progress,
             env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    (dest / "partial").rmdir()
    debs = sorted(p.name for p in dest.glob("*.deb"))
    (dest / "lock").unlink(missing_ok=True)
    return debs


def pip_installer() -> Path:
    """The pip wheel of the host's ``ensurepip``, run from the wheel inside the build (the image has no pip)."""
    bundled = resources.files("ensurepip") / "_bundled"
    try:
        wheels = sorted((p for p in bundled.iterdir() if p.name.startswith("pip-") and p.name.endswith(".whl")),
                        key=lambda p: p.name)
    except (OSError, FileNotFoundError) as exc:
        raise EnvironmentBuildFailed(f"the host Python has no ensurepip wheels ({exc}); cannot install "
                                     f"Python packages into an environment") from exc
    if not wheels:
        raise EnvironmentBuildFailed("the host Python's ensurepip has no pip wheel")
    return Path(str(wheels[-1]))


def fetch_python(specs: tuple[str, ...], dest: Path, progress: Progress, index_url: str | None) -> None:
    """Wheels for CPython 3.11 on x86-64 Linux, dependencies included, plus the installer and the list."""
    wheels = dest / "wheels"
    wheels.mkdir(parents=True)
    index = ["--index-url", index_url] if index_url else []
    argv = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-cache-dir",
            "--disable-pip-version-check", "--retries", "2", "--timeout", "30", "--dest", str(wheels), *index,
            *PY_TARGET, *specs]
    run_step("fetching the Python packages (pip download)", argv, progress)
    installer = pip_installer()
    (dest / installer.name).write_bytes(installer.read_bytes())
    (dest / "requirements.txt").write_text("".join(f"{s}\n" for s in specs))


def npm_registry_of_host() -> str:
    """The registry the host's npm is configured with (its .npmrc, or npm's default)."""
    try:
        done = subprocess.run(["npm", "config", "get", "registry"], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentBuildFailed(f"cannot ask npm for its registry: {exc}") from exc
    if done.returncode != 0 or not done.stdout.strip().startswith(("https://", "http://")):
        raise EnvironmentBuildFailed(f"npm names no usable registry: {tail(done.stdout + done.stderr)}")
    return done.stdout.strip()


def fetch_npm(specs: tuple[str, ...], dest: Path, progress: Progress, registry: str | None) -> None:
    """The packages laid out as ``npm install --global`` would under ``/usr/local``, no package code run.

    ``--ignore-scripts`` alone does not keep package code off the host: npm (pacote) still runs the ``prepare``
    script of a git or directory dependency while packing it. So the tree is first resolved into a lockfile
    only (no package is packed), every entry of it must be a tarball from the registry itself with an
    integrity hash (a git, file, link or foreign-URL dependency is refused), then exactly that lockfile is
    fetched (``npm ci``) into the cache, and the global layout is made from the cache alone (``--offline``),
    so nothing is resolved twice.
    """
    registry = registry or npm_registry_of_host()
    cache = dest.parent / "npm-cache"
    scratch = dest.parent / "npm-resolve"
    scratch.mkdir(parents=True)
    (scratch / "package.json").write_text(json.dumps({"name": "oa-environment", "version": "0.0.0", "private": True}))
    common = ["--ignore-scripts", "--no-audit", "--no-fund", "--no-update-notifier", "--cache", str(cache),
              "--registry", registry]
    env = {**os.environ, "npm_config_loglevel": "warn"}
    run_step("resolving the npm packages (npm install --package-lock-only)",
             ["npm", "install", "--package-lock-only", *common, *specs], progress, env=env, cwd=scratch)
    registry_only(scratch / "package-lock.json", registry)
    run_step("fetching the npm packages (npm ci)", ["npm", "ci", *common], progress, env=env, cwd=scratch)
    run_step("laying out the npm packages (npm install --global --offline)",
             ["npm", "install", "--global", "--offline", "--prefix", str(dest), *common, *specs], progress,
             env=env, cwd=dest.parent)


def registry_only(lockfile: Path, registry: str) -> None:
    """Refuse a resolved tree with any package that is not a tarball of ``registry`` with an integrity hash."""
    try:
        packages = json.loads(lockfile.read_text())["packages"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EnvironmentBuildFailed(f"npm left no readable lockfile ({exc})") from exc
    prefix = registry.rstrip("/") + "/"
    refused = [f"{where.removeprefix('node_modules/')} ({entry.get('resolved') or 'a link'})"
               for where, entry in packages.items()
               if where and (entry.get("link") or not str(entry.get("resolved", "")).startswith(prefix)
                             or not entry.get("integrity"))]
    if refused:
        raise EnvironmentBuildFailed(
            "npm packages may come only from the registry, as tarballs with an integrity hash (a git, file or "
            "URL dependency would run its prepare script on the host while npm packs it); refused: "
            + ", ".join(refused[:10]) + (f" and {len(refused) - 10} more" if len(refused) > 10 else ""))
