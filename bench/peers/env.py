"""The peers' environment, made by the bench itself: a venv with the peers from PyPI, and SWE-ReX's image.

Both are cached under the bench directory and reused while the versions and our image are the same, so only
the first run pays for ``pip install`` and ``docker build`` (a run after that stays within the bench's time
bound). SWE-ReX's ``DockerDeployment`` starts ``swerex-remote`` inside the container; our image has no pip and
its containers no network, so its package tree is installed on the host (``pip install --target``, wheels for
the same CPython 3.11 as the image's) and copied into an image derived from ours by a local ``docker build``.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import venv
from pathlib import Path

PEERS = ("llm-sandbox[docker]", "swe-rex", "aiohttp")  # aiohttp: SWE-ReX's RemoteRuntime needs it, undeclared
LAUNCHER = "#!/bin/sh\nPYTHONPATH=/opt/swerex-site exec python3 -m swerex.server \"$@\"\n"
DOCKERFILE = "ARG BASE\nFROM ${BASE}\nCOPY site /opt/swerex-site\nCOPY swerex-remote /usr/local/bin/swerex-remote\n"


def _run(cmd: list[str], what: str) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return done.stdout


def peer_python(root: Path) -> Path:
    """The venv's interpreter, with the peers installed (once)."""
    python = root / "venv" / "bin" / "python"
    marker = root / "venv" / f".peers-{hashlib.sha256(' '.join(PEERS).encode()).hexdigest()[:12]}"
    if not marker.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(root / "venv")
        _run([str(python), "-m", "pip", "install", "-q", *PEERS], "pip install of the peers")
        marker.write_text(_run([str(python), "-m", "pip", "freeze"], "pip freeze"))
    return python


def swerex_image(root: Path, python: Path, base_image: str) -> str:
    """Our image plus ``swerex-remote`` (built once per SWE-ReX version and base image)."""
    version = _run([str(python), "-c", "import importlib.metadata as m; print(m.version('swe-rex'))"],
                   "reading the swe-rex version").strip()
    tag = "openanalyst/bench-swerex:" + hashlib.sha256(f"{version}:{base_image}".encode()).hexdigest()[:12]
    have = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False)
    if have.returncode == 0:
        return tag
    context = root / "swerex-image"
    site = context / "site"
    if not site.exists():
        _run([str(python), "-m", "pip", "install", "-q", "--target", str(site), f"swe-rex=={version}"],
             "pip install --target of swe-rex")
    launcher = context / "swerex-remote"
    launcher.write_text(LAUNCHER)
    launcher.chmod(0o755)
    (context / "Dockerfile").write_text(DOCKERFILE)
    _run(["docker", "build", "-q", "--build-arg", f"BASE={base_image}", "--label", "openanalyst.test=1",
          "-t", tag, str(context)], "docker build of the SWE-ReX image")
    return tag


def prepare(root: Path, base_image: str) -> tuple[Path, str]:
    """The peers' interpreter and SWE-ReX's image tag."""
    root.mkdir(parents=True, exist_ok=True)
    python = peer_python(root)
    return python, swerex_image(root, python, base_image)


if __name__ == "__main__":  # prepare ahead of a timed run: python bench/peers/env.py DIR IMAGE
    print(prepare(Path(sys.argv[1]), sys.argv[2]))
