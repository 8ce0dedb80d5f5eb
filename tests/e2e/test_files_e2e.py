"""The files API through the real server process and the real engine: binary round trips, a directory as a tar,
listings with hashes, hostile archives refused and listed, uploads a session's bash can edit, tenants kept
apart, symlink swaps raced against PUT and GET, and every request in the audit log."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_process import ServerProcess

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(300)]

A = {"X-Tenant-ID": "files-a"}
B = {"X-Tenant-ID": "files-b"}


@pytest.fixture
def server(serve: Callable[..., ServerProcess], sandbox_image: str) -> ServerProcess:
    return serve()


def bash(base: str, headers: dict[str, str], command: str, session: str | None = None,
         background: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"input": {"command": command} | ({"run_in_background": True} if background else {})}
    if session is not None:
        body["session_id"] = session
    response = httpx.post(f"{base}/v1/tools/bash", headers=headers, json=body, timeout=60)
    assert response.status_code == 200, response.text
    out: dict[str, Any] = response.json()
    return out


def put(base: str, headers: dict[str, str], path: str, data: bytes, **params: str) -> httpx.Response:
    return httpx.put(f"{base}/v1/files/{path}", headers=headers, content=data, params=params, timeout=60)


def tar_of(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    return info


def test_binary_round_trip_directory_tar_listing_and_delete(server: ServerProcess) -> None:
    """Random bytes come back identical (whole and by range), a directory comes back as a tar of the same
    bytes, the listing has sizes and SHA-256, and DELETE removes a tree."""
    blob = os.urandom(3 * 1024 * 1024 + 17)
    small = os.urandom(4096)
    r = put(server.base, A, "data/deep/blob.bin", blob)
    assert r.status_code == 200, r.text
    assert r.json()["sha256"] == hashlib.sha256(blob).hexdigest() and r.json()["bytes"] == len(blob)
    assert put(server.base, A, "data/small.bin", small).status_code == 200
    got = httpx.get(f"{server.base}/v1/files/data/deep/blob.bin", headers=A, timeout=60)
    assert got.status_code == 200 and got.content == blob
    part = httpx.get(f"{server.base}/v1/files/data/deep/blob.bin", headers=A | {"Range": "bytes=100-199"}, timeout=60)
    assert part.status_code == 206 and part.content == blob[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(blob)}"
    bad = httpx.get(f"{server.base}/v1/files/data/small.bin", headers=A | {"Range": "bytes=9999-"}, timeout=60)
    assert bad.status_code == 416 and bad.json()["error"]["code"] == "INVALID_RANGE"

    tar = httpx.get(f"{server.base}/v1/files/data", headers=A, timeout=60)
    assert tar.status_code == 200 and tar.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(tar.content)) as tf:
        names = tf.getnames()
        assert {"deep/", "deep/blob.bin", "small.bin"} <= {n if not tf.getmember(n).isdir() else n + "/"
                                                           for n in names} | set(names)
        blob_member = tf.extractfile("deep/blob.bin")
        assert blob_member is not None and blob_member.read() == blob

    listing = httpx.get(f"{server.base}/v1/files/data", headers=A, params={"list": "true"}, timeout=60).json()
    by_name = {e["name"]: e for e in listing["data"]}
    assert by_name["small.bin"]["sha256"] == hashlib.sha256(small).hexdigest()
    assert by_name["small.bin"]["size"] == 4096 and by_name["deep"]["type"] == "directory"
    assert listing["meta"]["total"] == 2

    gone = httpx.delete(f"{server.base}/v1/files/data", headers=A, timeout=60)
    assert gone.status_code == 200 and gone.json()["type"] == "directory"
    missing = httpx.get(f"{server.base}/v1/files/data/small.bin", headers=A, timeout=60)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "FILE_NOT_FOUND"
    assert put(server.base, A, "x/..%2F..%2Fescape", b"x").json()["error"]["code"] == "INVALID_PATH"


def test_a_sessions_bash_can_edit_and_delete_an_uploaded_file(server: ServerProcess) -> None:
    """An upload belongs to the workspace group with group write, so a session (its own uid) edits it, and
    files from an archive too; what bash wrote comes back through GET."""
    session = httpx.post(f"{server.base}/sessions", headers=A, timeout=30).json()["session_id"]
    assert put(server.base, A, "up/notes.txt", b"one\n").status_code == 200
    arch = tar_of([(member("pkg/run.sh", mode=0o755), b"#!/bin/sh\necho ran\n")])
    assert put(server.base, A, "up", arch, unpack="tar").status_code == 200
    out = bash(server.base, A, "echo two >> up/notes.txt && ./up/pkg/run.sh && echo new > up/pkg/made.txt "
                               "&& stat -c '%a %g' up/notes.txt && id -u", session)
    assert out["exit_code"] == 0, out
    lines = out["output"].split()
    assert lines[0] == "ran" and lines[1] == "664" and lines[2] == "1000" and int(lines[3]) >= 10000
    assert httpx.get(f"{server.base}/v1/files/up/notes.txt", headers=A, timeout=30).content == b"one\ntwo\n"
    assert httpx.get(f"{server.base}/v1/files/up/pkg/made.txt", headers=A, timeout=30).content == b"new\n"
    assert bash(server.base, A, "rm -r up && echo gone", session)["output"] == "gone\n"


def test_hostile_archives_are_refused_or_neutralised_and_listed(server: ServerProcess, tmp_path: Path) -> None:
    """../, absolute names, symlinks and hard links (out and in), devices, FIFOs, setuid bits: nothing lands
    outside, no link or special file is made, set-id bits are stripped, and each is listed with its reason."""
    entries = [(member("ok.txt"), b"fine"), (member("../escape.txt"), b"x"), (member("/abs.txt"), b"x"),
               (member("a/../../up.txt"), b"x"), (member("out", tarfile.SYMTYPE, link="/etc"), None),
               (member("in", tarfile.SYMTYPE, link="ok.txt"), None),
               (member("hard", tarfile.LNKTYPE, link="/etc/passwd"), None),
               (member("dev", tarfile.CHRTYPE), None), (member("fifo", tarfile.FIFOTYPE), None),
               (member("suid", mode=0o4755), b"#!/bin/sh\n"), (member("sgid", mode=0o2755), b"x"),
               (member("out/through.txt"), b"x")]
    r = put(server.base, A, "hostile", tar_of(entries), unpack="tar")
    assert r.status_code == 200, r.text
    skipped = {(s["name"], s["reason"]) for s in r.json()["skipped"]}
    assert {("../escape.txt", "unsafe_path"), ("/abs.txt", "unsafe_path"), ("a/../../up.txt", "unsafe_path"),
            ("out", "link"), ("in", "link"), ("hard", "link"), ("dev", "special_file"), ("fifo", "special_file"),
            ("suid", "setid_stripped"), ("sgid", "setid_stripped")} <= skipped
    names = {e["name"]: e for e in httpx.get(f"{server.base}/v1/files/hostile", headers=A,
                                              params={"list": "true"}, timeout=30).json()["data"]}
    assert set(names) == {"ok.txt", "suid", "sgid", "out"}  # "out" is the directory of out/through.txt
    assert names["out"]["type"] == "directory" and int(names["suid"]["mode"], 8) & 0o7000 == 0
    top = httpx.get(f"{server.base}/v1/files/", headers=A, params={"list": "true"}, timeout=30).json()["data"]
    assert {e["name"] for e in top} - {"lost+found"} == {"hostile"}
    assert {p.name for p in (server.data_dir / "workspaces").iterdir()} == {"files-a"}

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("z/ok.bin", os.urandom(1000))
        zf.writestr("../zip-escape", b"x")
        zf.writestr("/zip-abs", b"x")
        link = zipfile.ZipInfo("z/link")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
        suid = zipfile.ZipInfo("z/suid")
        suid.external_attr = (0o104755 << 16)
        zf.writestr(suid, b"x")
    z = httpx.put(f"{server.base}/v1/files/zipped", headers=A | {"Content-Type": "application/zip"},
                  content=buf.getvalue(), timeout=60)
    assert z.status_code == 200, z.text
    assert {(s["name"], s["reason"]) for s in z.json()["skipped"]} == {
        ("../zip-escape", "unsafe_path"), ("/zip-abs", "unsafe_path"), ("z/link", "link"), ("z/suid", "setid_stripped")}
    assert z.json()["files"] == 2

    garbage = put(server.base, A, "junk", os.urandom(5000), unpack="zip")
    assert garbage.status_code == 422 and garbage.json()["error"]["code"] == "INVALID_ARCHIVE"
    truncated = put(server.base, A, "junk", tar_of([(member("big"), os.urandom(100_000))])[:20_000], unpack="tar")
    assert truncated.status_code == 422, truncated.text


def test_fuzzed_archives_never_answer_a_5xx(server: ServerProcess) -> None:
    """Mutated tars and zips (flipped bytes, cut short) are unpacked or refused with a code, never a 5xx."""
    seed = tar_of([(member(f"d{i}/f{i}"), os.urandom(300)) for i in range(5)])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(5):
            zf.writestr(f"d{i}/f{i}", os.urandom(300))
    zseed = buf.getvalue()
    rng = __import__("random").Random(12)
    for i in range(60):
        kind, base = ("tar", seed) if i % 2 else ("zip", zseed)
        data = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if i % 5 == 0:
            data = data[: rng.randrange(len(data))]
        r = put(server.base, A, f"fuzz/{i}", bytes(data), unpack=kind)
        assert r.status_code < 500, r.text
        assert r.status_code == 200 or "error" in r.json()


def test_tenants_cannot_reach_each_others_files(server: ServerProcess) -> None:
    """Tenant B sees nothing of tenant A's workspace by any path."""
    assert put(server.base, A, "secret.txt", b"a's").status_code == 200
    assert httpx.get(f"{server.base}/v1/files/secret.txt", headers=B, timeout=30).status_code == 404
    for path in ("../files-a/secret.txt", "..%2Ffiles-a%2Fsecret.txt"):
        r = httpx.get(f"{server.base}/v1/files/{path}", headers=B, timeout=30)
        assert r.status_code in (400, 404), r.text
    assert httpx.get(f"{server.base}/v1/files/secret.txt", headers=A, timeout=30).content == b"a's"


@pytest.mark.timeout(600)  # 900 requests on a shared 2-core machine
def test_symlink_swaps_raced_against_put_and_get_never_escape(server: ServerProcess, tmp_path: Path) -> None:
    """A background job of the tenant swaps a directory for a symlink to / (and back) as fast as it can while
    the host PUTs and GETs through it hundreds of times: nothing is ever written or read outside."""
    session = httpx.post(f"{server.base}/sessions", headers=A, timeout=30).json()["session_id"]
    assert put(server.base, A, "race/d/inside.txt", b"inside").status_code == 200
    # renameat2(RENAME_EXCHANGE) swaps the directory and a link to /etc atomically, forever: race/d is
    # always there, a directory one instant and a link out the next.
    swap = ("python3 -c 'import ctypes, os\nlibc = ctypes.CDLL(None)\nos.symlink(\"/etc\", \"race/l\")\n"
            "while True: libc.renameat2(-100, b\"race/d\", -100, b\"race/l\", 2)'")
    assert bash(server.base, A, swap, session, background=True)["error"] is None
    codes: dict[int, int] = {}
    leaked: list[str] = []
    try:
        with httpx.Client(timeout=30) as client:
            for i in range(300):
                r = client.put(f"{server.base}/v1/files/race/d/w{i % 5}.txt", headers=A, content=b"w")
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                g = client.get(f"{server.base}/v1/files/race/d/passwd", headers=A)
                if g.status_code == 200:
                    leaked.append(g.text[:50])
                g2 = client.get(f"{server.base}/v1/files/race/d/inside.txt", headers=A)
                assert g2.status_code in (200, 404, 409), g2.text
                if g2.status_code == 200:
                    assert g2.content == b"inside"
    finally:
        httpx.delete(f"{server.base}/sessions/{session}", headers=A, timeout=30)  # ends the swapping loop
    assert not leaked
    # Both outcomes happened: the race was real (a link on the way is refused, never followed).
    assert set(codes) <= {200, 404, 409} and codes.get(200, 0) > 0 and codes.get(409, 0) > 0, codes
    for name in (f"w{i}.txt" for i in range(5)):
        assert not Path("/", name).exists() and not Path("/etc", name).exists()


def test_every_request_is_in_the_audit_log(server: ServerProcess) -> None:
    """PUT, GET, list and DELETE each leave a started/finished pair with the path and a summary."""
    data = os.urandom(1234)
    assert put(server.base, A, "audited.bin", data).status_code == 200
    assert httpx.get(f"{server.base}/v1/files/audited.bin", headers=A, timeout=30).content == data
    assert httpx.delete(f"{server.base}/v1/files/audited.bin", headers=A, timeout=30).status_code == 200
    records = httpx.get(f"{server.base}/v1/audit", headers=A, params={"per_page": 100}, timeout=30).json()["data"]
    finished = {r["tool"]: r for r in records if r["phase"] == "finished" and r["tool"].startswith("files.")}
    assert {"files.put", "files.get", "files.delete"} <= set(finished)
    put_summary = json.loads(finished["files.put"]["output"])
    assert put_summary["sha256"] == hashlib.sha256(data).hexdigest() and put_summary["bytes"] == 1234
    assert json.loads(finished["files.get"]["output"])["sha256"] == hashlib.sha256(data).hexdigest()


def test_the_owners_uploads_belong_to_the_owner(server: ServerProcess, tmp_path: Path) -> None:
    """In the owner's workspace (a person's directory) an upload takes the directory owner's uid and gid,
    as the owner's tools would, and no group or other write bit is added."""
    workspace = tmp_path / "workspace"  # the serve fixture's owner workspace
    r = httpx.put(f"{server.base}/v1/files/mine/owner.bin", content=os.urandom(64), timeout=60)
    assert r.status_code == 200, r.text
    st, top = (workspace / "mine" / "owner.bin").stat(), workspace.stat()
    assert (st.st_uid, st.st_gid) == (top.st_uid, top.st_gid)
    assert st.st_mode & 0o7022 == 0
