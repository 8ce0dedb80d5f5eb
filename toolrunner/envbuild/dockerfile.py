"""The Dockerfile and build context of an environment: the base by id, the fetched packages, the fragment.

No tenant text reaches a ``RUN`` line: the package lists travel as files (``.deb`` names by glob, the Python
list as ``requirements.txt``, the npm tree as files), so the only tenant text in the Dockerfile is the
fragment, already limited to ``RUN``/``ENV``/``LABEL`` by ``spec.check_fragment``.
"""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

from toolrunner.envbuild.spec import Definition

_WHEEL_RE = re.compile(r"pip-[0-9][0-9A-Za-z.]*-py3-none-any\.whl")
NODE_PATH = "/usr/local/lib/node_modules"


def render(defn: Definition, base_id: str, *, debs: bool, pip_wheel: str | None, npm: bool) -> str:
    """The Dockerfile text: each step only when it has something to install, the fragment last."""
    lines = [f"FROM {base_id}"]
    if debs:
        lines += ["COPY debs /tmp/oa-env-debs",
                  "RUN set -eu; DEBIAN_FRONTEND=noninteractive dpkg -i /tmp/oa-env-debs/*.deb; "
                  "rm -rf /tmp/oa-env-debs"]
    if pip_wheel is not None:
        if not _WHEEL_RE.fullmatch(pip_wheel):
            raise ValueError(f"unexpected pip wheel name {pip_wheel!r}")
        lines += ["COPY python /tmp/oa-env-python",
                  f"RUN set -eu; python3 /tmp/oa-env-python/{pip_wheel}/pip install --no-index "
                  "--find-links /tmp/oa-env-python/wheels --no-cache-dir --disable-pip-version-check "
                  "--break-system-packages --root-user-action=ignore --no-warn-script-location "
                  "-r /tmp/oa-env-python/requirements.txt; rm -rf /tmp/oa-env-python"]
    if npm:
        lines += ["COPY npm /usr/local/", f"ENV NODE_PATH={NODE_PATH}"]
    if defn.dockerfile:
        lines += ["# the environment's own steps", defn.dockerfile]
    return "\n".join(lines) + "\n"


def _owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Context entries as root's, without setuid/setgid/sticky bits, and never a device or fifo."""
    if not (info.isfile() or info.isdir() or info.issym()):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode &= 0o777
    return info


def write_context(work: Path, dockerfile: str, out: Path) -> None:
    """Tar the Dockerfile and the fetched ``debs``/``python``/``npm`` directories (links kept as links)."""
    with tarfile.open(out, "w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
        for name in ("debs", "python", "npm"):
            if (work / name).is_dir():
                tar.add(work / name, arcname=name, filter=_owned_by_root)
