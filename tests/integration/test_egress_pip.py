"""`pip download` through the egress proxy from a local package index on loopback (a PEP 503 simple index
serving one wheel): allowed when the index's name is on the allow-list, refused when it is not."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from fakes.origin import serving

from policies.network import EgressRules
from toolrunner.egress import AddressPolicy, EgressProxy, Identity, MemorySink, ProxyThread, StaticResolver

WHEEL = "egresstest-1.0-py3-none-any.whl"


def _wheel() -> bytes:
    files = {"egresstest/__init__.py": b"VALUE = 1\n",
             "egresstest-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: egresstest\nVersion: 1.0\n",
             "egresstest-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                               b"Tag: py3-none-any\n"}
    record = "".join(
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
        f"{len(data)}\n" for name, data in files.items()) + "egresstest-1.0.dist-info/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("egresstest-1.0.dist-info/RECORD", record)
    return buf.getvalue()


@pytest.fixture
def index() -> Iterator[tuple[int, bytes]]:
    wheel = _wheel()
    digest = hashlib.sha256(wheel).hexdigest()
    pages = {"/simple/egresstest/": f'<a href="/files/{WHEEL}#sha256={digest}">{WHEEL}</a>'.encode(),
             f"/files/{WHEEL}": wheel}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            body = pages.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.send_header("Content-Type", "text/html" if self.path.startswith("/simple") else "application/zip")
            self.end_headers()
            self.wfile.write(body or b"")

    with serving(Handler, "127.0.0.2") as port:
        yield port, wheel


def _pip_download(index_name: str, port: int, proxy: str, dest: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--disable-pip-version-check",
         "--retries", "0", "--timeout", "10", "--index-url", f"http://{index_name}:{port}/simple/",
         "--trusted-host", index_name, "--proxy", proxy, "--dest", str(dest), "egresstest"],
        capture_output=True, text=True, timeout=90, env=env, check=False)


def test_pip_download_through_the_proxy(index: tuple[int, bytes], tmp_path: Path) -> None:
    """pip fetches the index page and the wheel through the proxy when the index is allowed, byte for byte;
    with the index's name off the list pip fails and the proxy recorded the denial."""
    port, wheel = index
    sink = MemorySink()
    rules = EgressRules(allow=(f"pypi.test:{port}",))
    proxy = EgressProxy(lambda _t: rules, sink, addresses=AddressPolicy.from_strings(["127.0.0.2/32"]),
                        resolver=StaticResolver({"pypi.test": ["127.0.0.2"], "mirror.test": ["127.0.0.2"]}))
    thread = ProxyThread(proxy).start()
    try:
        host, pport = thread.listen_tcp(Identity("t1", "s1"))
        ok = _pip_download("pypi.test", port, f"http://{host}:{pport}", tmp_path / "ok")
        assert ok.returncode == 0, ok.stderr
        assert (tmp_path / "ok" / WHEEL).read_bytes() == wheel
        denied = _pip_download("mirror.test", port, f"http://{host}:{pport}", tmp_path / "denied")
        assert denied.returncode != 0 and not (tmp_path / "denied" / WHEEL).exists()
    finally:
        thread.stop()
    by_host = {(r.host, r.decision) for r in sink.records}
    assert ("pypi.test", "allow") in by_host and ("mirror.test", "deny") in by_host
    assert all(r.rule == f"allow:pypi.test:{port}" for r in sink.records if r.host == "pypi.test")
