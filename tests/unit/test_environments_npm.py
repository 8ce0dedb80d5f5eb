"""npm packages are fetched on the host without running any package code: a registry package that depends on
a git repository (whose prepare script npm would run while packing it, --ignore-scripts or not) is refused
before anything is packed, and an ordinary registry package is laid out as before. Real npm, a real registry
over loopback HTTP, a real git repository."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from test_environments_support import npm_registry, package_sources

from toolrunner.envbuild.errors import EnvironmentBuildFailed
from toolrunner.envbuild.fetch import fetch_npm, registry_only

pytestmark = pytest.mark.timeout(180)


def packed(src: Path, manifest: dict[str, object], out: Path) -> Path:
    src.mkdir(parents=True)
    (src / "package.json").write_text(json.dumps(manifest))
    (src / "index.js").write_text("module.exports = 42;\n")
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["npm", "pack", "--pack-destination", str(out), str(src)], capture_output=True,
                          text=True, check=True, timeout=120)
    return out / done.stdout.strip().splitlines()[-1]


def test_a_git_dependency_is_refused_and_its_prepare_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "PREPARE-RAN"
    payload = tmp_path / "payload"
    payload.mkdir()
    (payload / "package.json").write_text(json.dumps({"name": "oa-payload", "version": "1.0.0", "license": "MIT",
                                                      "scripts": {"prepare": f"id > {marker}"}}))
    for cmd in (["git", "init", "-q"], ["git", "add", "."],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x"]):
        subprocess.run(cmd, cwd=payload, check=True, timeout=60)
    tgz = packed(tmp_path / "evil", {"name": "oa-evil", "version": "1.0.0", "license": "MIT",
                                     "dependencies": {"oa-payload": f"git+file://{payload}"}}, tmp_path / "packed")
    with package_sources(tmp_path / "served") as served:
        npm_registry(served.root, tgz, "oa-evil", "1.0.0", served.url)
        with pytest.raises(EnvironmentBuildFailed, match=r"refused: oa-payload \(git\+file://"):
            fetch_npm(("oa-evil",), tmp_path / "ctx" / "npm", lambda line: None, served.url)
    assert not marker.exists(), "a dependency's prepare script ran on the host"


def test_a_registry_package_is_laid_out_globally(tmp_path: Path) -> None:
    tgz = packed(tmp_path / "good", {"name": "oa-good", "version": "1.2.3", "license": "MIT", "main": "index.js"},
                 tmp_path / "packed")
    with package_sources(tmp_path / "served") as served:
        npm_registry(served.root, tgz, "oa-good", "1.2.3", served.url)
        fetch_npm(("oa-good@1.2.3",), tmp_path / "ctx" / "npm", lambda line: None, served.url)
    assert json.loads((tmp_path / "ctx" / "npm" / "lib" / "node_modules" / "oa-good" / "package.json")
                      .read_text())["version"] == "1.2.3"


@pytest.mark.parametrize(("entry", "why"), [
    ({"resolved": "https://evil.example/x.tgz", "integrity": "sha512-x"}, "another host's tarball"),
    ({"resolved": "http://127.0.0.1:9/x.tgz"}, "no integrity hash"),
    ({"link": True, "resolved": "../x"}, "a link"),
    ({"version": "1.0.0"}, "nothing resolved"),
])
def test_registry_only_refuses(tmp_path: Path, entry: dict[str, object], why: str) -> None:
    lock = tmp_path / "package-lock.json"
    lock.write_text(json.dumps({"packages": {"": {}, "node_modules/x": entry}}))
    with pytest.raises(EnvironmentBuildFailed, match="refused: x"):
        registry_only(lock, "http://127.0.0.1:9")
