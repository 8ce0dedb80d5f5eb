"""Package sources for the environment tests, on loopback: a PEP 503 simple index of wheels made here and a
minimal npm registry (packument + tarball, the registry's real wire format) serving an ``npm pack``ed
package. No test in this module; the environment tests import it."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import subprocess
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

from fakes.origin import serving


def make_wheel(out_dir: Path, name: str, version: str, code: str) -> Path:
    """A pure-Python wheel with one module ``name`` whose source is ``code`` (no build tool needed)."""
    dist = f"{name}-{version}"
    files = {f"{name}/__init__.py": code.encode(),
             f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                        b"Tag: py3-none-any\n"}
    record = "".join(f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()}"
                     f",{len(data)}\n" for path, data in files.items()) + f"{dist}.dist-info/RECORD,,\n"
    files[f"{dist}.dist-info/RECORD"] = record.encode()
    path = out_dir / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for arcname, data in files.items():
            zf.writestr(arcname, data)
    return path


def simple_index(root: Path, wheels: list[Path]) -> None:
    """A PEP 503 simple repository under ``root/simple`` linking the wheels (with their sha256)."""
    (root / "files").mkdir(parents=True, exist_ok=True)
    projects: dict[str, list[Path]] = {}
    for wheel in wheels:
        (root / "files" / wheel.name).write_bytes(wheel.read_bytes())
        projects.setdefault(wheel.name.split("-")[0].lower().replace("_", "-"), []).append(wheel)
    for project, files in projects.items():
        links = "".join(f'<a href="../../files/{w.name}#sha256={hashlib.sha256(w.read_bytes()).hexdigest()}">'
                        f"{w.name}</a>\n" for w in files)
        (root / "simple" / project).mkdir(parents=True, exist_ok=True)
        (root / "simple" / project / "index.html").write_text(f"<html><body>{links}</body></html>")
    index = "".join(f'<a href="{p}/">{p}</a>\n' for p in projects)
    (root / "simple" / "index.html").write_text(f"<html><body>{index}</body></html>")


def npm_pack(src: Path, out_dir: Path, name: str, version: str, main: str, bin_name: str, bin_code: str) -> Path:
    """``npm pack`` a tiny package with a module and a command, the way a real one is published."""
    src.mkdir(parents=True)
    (src / "package.json").write_text(json.dumps({"name": name, "version": version, "main": "index.js",
                                                  "bin": {bin_name: "cli.js"}, "license": "MIT"}))
    (src / "index.js").write_text(main)
    (src / "cli.js").write_text("#!/usr/bin/env node\n" + bin_code)
    (src / "cli.js").chmod(0o755)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["npm", "pack", "--pack-destination", str(out_dir), str(src)], capture_output=True,
                          text=True, timeout=120, check=True)
    return out_dir / done.stdout.strip().splitlines()[-1]


def npm_registry(root: Path, tarball: Path, name: str, version: str, base_url: str) -> None:
    """The packument npm fetches for ``name`` (file ``root/<name>``) and the tarball it names."""
    (root / "tarballs").mkdir(parents=True, exist_ok=True)
    (root / "tarballs" / tarball.name).write_bytes(tarball.read_bytes())
    data = tarball.read_bytes()
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    with tarfile.open(tarball) as tar:
        member = tar.extractfile("package/package.json")
        assert member is not None
        manifest = json.loads(member.read())
    doc: dict[str, Any] = {
        "name": name, "dist-tags": {"latest": version},
        "versions": {version: {**manifest, "dist": {"tarball": f"{base_url}/tarballs/{tarball.name}",
                                        "shasum": hashlib.sha1(data).hexdigest(), "integrity": integrity}}}}
    (root / name).write_text(json.dumps(doc))


@dataclass(frozen=True)
class Sources:
    """A served package root and its URLs."""

    root: Path
    url: str

    @property
    def pip_index(self) -> str:
        return f"{self.url}/simple"


@contextlib.contextmanager
def tiny_packages(root: Path) -> Iterator[Sources]:
    """Served sources with the wheel ``oatiny`` 1.0 (``oatiny.hello()``) and the npm package ``oa-tiny-js``
    1.0.0 (``hello()`` and the command ``oa-tiny``)."""
    root.mkdir(parents=True, exist_ok=True)
    wheel = make_wheel(root, "oatiny", "1.0", "def hello():\n    return 'hello from oatiny'\n")
    with package_sources(root / "served") as served:
        simple_index(served.root, [wheel])
        tgz = npm_pack(root / "js", root / "packed", "oa-tiny-js", "1.0.0",
                       "exports.hello = () => 'hi from oa-tiny-js';\n", "oa-tiny",
                       "console.log('cli says ' + require('./index.js').hello());\n")
        npm_registry(served.root, tgz, "oa-tiny-js", "1.0.0", served.url)
        yield served


@contextlib.contextmanager
def package_sources(root: Path) -> Iterator[Sources]:
    """Serve ``root`` over HTTP on loopback (pip's simple index under /simple, npm packuments at /)."""
    root.mkdir(parents=True, exist_ok=True)

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serving(Handler) as port:
        yield Sources(root, f"http://127.0.0.1:{port}")
