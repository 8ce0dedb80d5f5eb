"""The client's files and environments resources against the real server process and a real sandbox:
binary files in and out (bytes, a local path, an open file), an archive unpacked with its hostile entry
listed, a directory downloaded as tar, an environment built and used by a tool call, its build events typed,
blocking and asyncio alike."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agent_support import sandbox_workspace
from openanalyst_client import AsyncClient, Client, NotFoundError
from openanalyst_client.events import EnvironmentBuildDoneEvent, EnvironmentBuildProgressEvent

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture
def server(serve: Callable[..., Any], sandbox_image: str, tmp_path: Path) -> Any:
    return serve(env={"OPENANALYST_OWNER_WORKSPACE": str(sandbox_workspace(tmp_path / "owner-ws"))})


def tar_of(entries: dict[str, bytes], link: tuple[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo(link[0])
            info.type, info.linkname = tarfile.SYMTYPE, link[1]
            tar.addfile(info)
    return out.getvalue()


def test_files_round_trip_binary_archives_and_listing(server: Any, tmp_path: Path) -> None:
    """Random bytes go in three ways and come back equal; the listing's hashes match; an archive's link out is
    refused and listed; a directory comes back as tar; a deleted file is gone."""
    blob = os.urandom(300_000)
    local = tmp_path / "local.bin"
    local.write_bytes(blob[::-1])
    with Client(server.base, tenant="fiona") as oa:
        assert oa.files.write("in/blob.bin", blob).bytes == len(blob)
        assert oa.files.write("in/from-path.bin", local).bytes == len(blob)
        assert oa.files.write("in/from-file.bin", io.BytesIO(b"\x00\xff" * 1000)).bytes == 2000
        assert oa.files.read("in/blob.bin") == blob
        assert oa.files.download("in/from-path.bin", tmp_path / "back.bin").read_bytes() == blob[::-1]
        listing = {e.name: e for e in oa.files.list("in").data}
        assert set(listing) == {"blob.bin", "from-path.bin", "from-file.bin"}
        assert listing["blob.bin"].sha256 == hashlib.sha256(blob).hexdigest()
        upload = oa.files.unpack("proj", tar_of({"src/a.txt": b"alpha", "README": b"readme"}, ("out", "/etc")))
        assert (upload.kind, upload.files) == ("archive", 2)
        assert [(s.name, s.reason) for s in upload.skipped] == [("out", "link")]
        assert oa.tools.call("bash", {"command": "cat proj/src/a.txt"}).output == "alpha"
        with tarfile.open(oa.files.download("proj", tmp_path / "proj.tar")) as tar:
            assert {m.name.lstrip("./") for m in tar.getmembers() if m.isfile()} >= {"src/a.txt", "README"}
        assert oa.files.delete("in/blob.bin").type == "file"
        with pytest.raises(NotFoundError):
            oa.files.read("in/blob.bin")


def test_environment_built_and_used(server: Any) -> None:
    """A fragment-only environment builds (typed progress, then done), a session-less call runs in it, and it
    becomes the tenant's default."""
    with Client(server.base, tenant="gwen") as oa:
        made = oa.environments.create("tools", dockerfile="ENV OA_CLIENT_MARK=built-by-client")
        assert made.name == "tools" and made.state in ("building", "ready")
        events = list(oa.environments.build_events("tools"))
        assert isinstance(events[-1], EnvironmentBuildDoneEvent) and events[-1].state == "ready", events[-5:]
        assert all(isinstance(e, EnvironmentBuildProgressEvent) for e in events[:-1])
        assert oa.environments.get("tools").state == "ready"
        assert [e.name for e in oa.environments.list().data] == ["tools"]
        assert oa.environments.set_default("tools").environment == "tools"
        assert oa.tools.call("bash", {"command": "echo $OA_CLIENT_MARK"}).output.strip() == "built-by-client"
        assert oa.environments.set_default(None).environment is None
        oa.environments.delete("tools")
        with pytest.raises(NotFoundError):
            oa.environments.get("tools")


def test_async_files_and_environments(server: Any, tmp_path: Path) -> None:
    """The asyncio resources send the same requests."""
    async def run() -> None:
        async with AsyncClient(server.base, tenant="hana") as oa:
            await oa.files.write("a/b.bin", b"\x01\x02\x03")
            assert await oa.files.read("a/b.bin") == b"\x01\x02\x03"
            assert (await oa.files.download("a", tmp_path / "a.tar")).stat().st_size > 0
            assert [e.name for e in (await oa.files.list("a")).data] == ["b.bin"]
            assert (await oa.files.delete("a")).type == "directory"
            assert (await oa.environments.list()).data == []
            assert (await oa.environments.default()).environment is None
    asyncio.run(run())
