"""The signed audit log through the real server process: an export verified offline with only the public
key, an export re-signed with a tenant-held key rejected, a published checkpoint that proves an early record
was removed, an inclusion proof; the real error codes of 429, 422 and start failures in the finished records;
a call cut off by kill -9 closed as INTERRUPTED at the next start; the private key in no sandbox mount."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from agent_support import parse_sse, sandbox_workspace, server_label

from server.audit.merkle import Frontier, leaf_hash
from server.audit.records import genesis_hash, head_mac, seal
from server.audit.recovery import ChainState, sign_head
from server.audit.signing import load_or_create

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ALPHA = {"X-Tenant-ID": "alpha"}
PUBLISH = "import sys\nopen(sys.argv[1], 'a').write(sys.stdin.read() + '\\x1e')\n"


def verify_cli(cmd: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, "audit", "verify", *args], capture_output=True, text=True, timeout=60,
                          check=False)


def audit_records(base: str, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    response = httpx.get(f"{base}/v1/audit", headers=headers, params={"per_page": 100, **params}, timeout=30)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def rechain(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out, prev = [], genesis_hash(records[0]["tenant"])
    for seq, record in enumerate(records, start=1):
        draft = {k: v for k, v in record.items() if k not in ("seq", "ts", "prev_hash", "hash")}
        out.append(seal(draft, seq=seq, ts=record["ts"], prev_hash=prev))
        prev = out[-1]["hash"]
    return out


def frontier(records: list[dict[str, Any]]) -> Frontier:
    tree = Frontier()
    for record in records:
        tree.append(leaf_hash(record["hash"]))
    return tree


def test_signed_export_checkpoints_and_proofs_offline(serve: Callable[..., Any], openanalyst_cmd: list[str],
                                                      tmp_path: Path) -> None:
    """Only the public key is handed out and it verifies the export; a head re-signed with any key a tenant
    could hold is rejected; the checkpoints reach the publication command; a rewrite by whoever holds the
    data directory is caught by a checkpoint published before it; an inclusion proof checks offline."""
    published = tmp_path / "published"
    script = tmp_path / "publish.py"
    script.write_text(PUBLISH)
    server = serve(env={"OPENANALYST_AUDIT_CHECKPOINT_EVERY": "2",
                        "OPENANALYST_AUDIT_PUBLISH_COMMAND": f"{sys.executable} {script} {published}"})
    for _ in range(3):  # six records: checkpoints at 2, 4, 6
        done = httpx.post(f"{server.base}/v1/tools/sleep", json={"input": {"seconds": 0.001}}, headers=ALPHA,
                          timeout=30)
        assert done.status_code == 200, done.text
    key = httpx.get(f"{server.base}/v1/audit/key", headers=ALPHA, timeout=30)
    assert key.status_code == 200 and key.json()["algorithm"] == "Ed25519"
    assert "PRIVATE" not in key.text and set(key.json()) == {
        "algorithm", "key_name", "key_id", "public_key", "vkey", "public_key_pem", "origin"}
    private = server.data_dir / "audit-signing.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert base64.b64encode(load_or_create(private, "openanalyst-audit").public.raw).decode() == \
        key.json()["public_key"]
    key_file = tmp_path / "server.pub"
    key_file.write_text(key.text)
    export = httpx.get(f"{server.base}/v1/audit/export", headers=ALPHA, timeout=30).text
    lines = export.splitlines(keepends=True)
    assert len(lines) == 8
    honest = tmp_path / "honest.jsonl"
    honest.write_text(export)
    ok = verify_cli(openanalyst_cmd, str(honest), "--public-key", str(key_file))
    assert ok.returncode == 0 and ok.stdout.startswith("OK records=6 ") and "tail=authenticated" in ok.stdout

    # The checkpoints were published, and the API lists the same notes.
    deadline = time.monotonic() + 30
    while not published.exists() or published.read_text().count("\x1e") < 3:
        assert time.monotonic() < deadline, "the publication command did not get three checkpoints"
        time.sleep(0.05)  # poll interval against the deadline
    notes = [n for n in published.read_text().split("\x1e") if n]
    listed = httpx.get(f"{server.base}/v1/audit/checkpoints", headers=ALPHA, timeout=30).json()
    assert [c["tree_size"] for c in listed["data"]] == [6, 4, 2]
    assert sorted(notes) == sorted(c["note"] for c in listed["data"])
    latest = httpx.get(f"{server.base}/v1/audit/checkpoints/latest", headers=ALPHA,
                       params={"format": "note"}, timeout=30)
    assert latest.text == listed["data"][0]["note"] and latest.text.startswith("openanalyst-audit/alpha\n6\n")
    at_four = tmp_path / "checkpoint-4.txt"
    at_four.write_text(next(n for n in notes if n.split("\n")[1] == "4"))
    assert verify_cli(openanalyst_cmd, str(honest), "--public-key", str(key_file),
                      "--checkpoint", str(at_four)).returncode == 0

    # An inclusion proof of record 3, checked offline; a proof for another tenant's checkpoint is refused.
    proof = httpx.get(f"{server.base}/v1/audit/proof", params={"seq": 3}, headers=ALPHA, timeout=30)
    assert proof.status_code == 200 and proof.json()["tree_size"] == 6
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(proof.text)
    checked = verify_cli(openanalyst_cmd, "--proof", str(proof_file), "--public-key", str(key_file))
    assert checked.returncode == 0 and checked.stdout.startswith("OK proof seq=3"), checked.stdout
    missing = httpx.get(f"{server.base}/v1/audit/proof", params={"seq": 3}, headers={"X-Tenant-ID": "beta"},
                        timeout=30)
    assert missing.status_code == 409 and missing.json()["error"]["code"] == "NOT_YET_CHECKPOINTED"

    records = [json.loads(line) for line in lines[1:-1]]
    head = json.loads(lines[-1])
    # 1. The tenant edits record 3 and re-signs with a fresh Ed25519 key of its own.
    edited = [dict(r) for r in records]
    edited[2]["output"] = "nothing happened"
    forged = rechain(edited)
    attacker = load_or_create(tmp_path / "attacker.key", "openanalyst-audit")
    signed = sign_head(attacker, "alpha", ChainState(6, forged[-1]["hash"], frontier(forged)))
    fake_head = head | {"hash": signed.hash, "root": signed.root, "sig": signed.mac,
                        "key_id": attacker.public.key_id}
    resigned = tmp_path / "resigned.jsonl"
    resigned.write_text(lines[0] + "".join(json.dumps(r) + "\n" for r in forged) + json.dumps(fake_head) + "\n")
    refused = verify_cli(openanalyst_cmd, str(resigned), "--public-key", str(key_file))
    assert refused.returncode == 1 and refused.stdout.startswith("TAMPERED") and "re-signed" in refused.stdout
    # 2. ... or with an HMAC tenant key, as format v1's GET /v1/audit/key handed out.
    hmac_head = {"type": "head", "v": 1, "tenant": "alpha", "seq": 6, "hash": forged[-1]["hash"],
                 "mac": head_mac(b"\x02" * 32, "alpha", 6, forged[-1]["hash"]), "mac_alg": "HMAC-SHA256"}
    resigned.write_text(lines[0] + "".join(json.dumps(r) + "\n" for r in forged) + json.dumps(hmac_head) + "\n")
    assert verify_cli(openanalyst_cmd, str(resigned), "--public-key", str(key_file)).returncode == 1
    # 3. Whoever holds the data directory removes record 1 and re-signs with the server's own key: only the
    #    checkpoint published before the rewrite shows it.
    server_key = load_or_create(private, "openanalyst-audit")
    shortened = rechain(records[1:])
    signed = sign_head(server_key, "alpha", ChainState(5, shortened[-1]["hash"], frontier(shortened)))
    rewritten = tmp_path / "rewritten.jsonl"
    rewritten.write_text(lines[0] + "".join(json.dumps(r) + "\n" for r in shortened) + json.dumps(
        head | {"seq": 5, "hash": signed.hash, "root": signed.root, "sig": signed.mac}) + "\n")
    assert verify_cli(openanalyst_cmd, str(rewritten), "--public-key", str(key_file)).returncode == 0
    caught = verify_cli(openanalyst_cmd, str(rewritten), "--public-key", str(key_file), "--checkpoint",
                        str(at_four))
    assert caught.returncode == 1 and "removed or changed" in caught.stdout, caught.stdout


POLICY = """
name = "one-at-a-time"
cpus = 0.5
memory_mb = 256
pids = 128
tmpfs_mb = 16
nofile = 256
fsize_mb = 16
default_timeout_s = 20
max_timeout_s = 60
output_cap_bytes = 4096
max_concurrent_calls = 1
"""


def finished_codes(base: str, headers: dict[str, str]) -> list[str | None]:
    return [r["error_code"] for r in audit_records(base, headers, phase="finished")]


@pytest.mark.docker
def test_finished_records_keep_the_real_error_codes(serve: Callable[..., Any], sandbox_image: str,
                                                    tmp_path: Path) -> None:
    """A 429 (over the call cap), a 422 (bad input) and a sandbox that cannot start are audited with
    TOO_MANY_CALLS, INVALID_TOOL_INPUT and SANDBOX_START_FAILED, not INTERNAL."""
    policy = tmp_path / "one.toml"
    policy.write_text(POLICY)
    server = serve(env={"OPENANALYST_OWNER_WORKSPACE": str(sandbox_workspace(tmp_path / "owner-ws")),
                        "OPENANALYST_TENANT_POLICIES": json.dumps({"alpha": str(policy)})})
    base = server.base
    assert httpx.post(f"{base}/v1/tools/bash", json={"input": {"command": "true"}}, headers=ALPHA,
                      timeout=60).status_code == 200
    started = threading.Event()

    def slow() -> None:
        with httpx.stream("POST", f"{base}/v1/tools/bash", headers=ALPHA, timeout=60,
                          json={"input": {"command": "echo go; sleep 3"}, "stream": True}) as response:
            for kind, _, _ in parse_sse(response.iter_lines()):
                if kind == "tool_output":
                    started.set()

    worker = threading.Thread(target=slow)
    worker.start()
    assert started.wait(30)
    refused = httpx.post(f"{base}/v1/tools/bash", json={"input": {"command": "true"}}, headers=ALPHA, timeout=30)
    worker.join(30)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "TOO_MANY_CALLS"
    invalid = httpx.post(f"{base}/v1/tools/bash", json={"input": {"command": 3}}, headers=ALPHA, timeout=30)
    assert invalid.status_code == 422 and invalid.json()["error"]["code"] == "INVALID_TOOL_INPUT"
    codes = finished_codes(base, ALPHA)
    assert "TOO_MANY_CALLS" in codes and "INVALID_TOOL_INPUT" in codes and "INTERNAL" not in codes, codes

    broken = serve(env={"OPENANALYST_OWNER_WORKSPACE": str(sandbox_workspace(tmp_path / "owner-ws2")),
                        "OPENANALYST_SANDBOX_RUNTIME": "runsc"}, data_dir=tmp_path / "data-runsc")
    failed = httpx.post(f"{broken.base}/v1/tools/bash", json={"input": {"command": "true"}}, headers=ALPHA,
                        timeout=60)
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "SANDBOX_START_FAILED", failed.text
    assert finished_codes(broken.base, ALPHA) == ["SANDBOX_START_FAILED"]


@pytest.mark.docker
def test_a_call_cut_off_by_kill_9_is_closed_as_interrupted(serve: Callable[..., Any], sandbox_image: str,
                                                          openanalyst_cmd: list[str], tmp_path: Path) -> None:
    """kill -9 of the server during `sleep 30`: the next start writes its finished record INTERRUPTED (with
    the started record's decision) and the chain and export still verify; no sandbox mount exposes the data
    directory or the private key."""
    env = {"OPENANALYST_OWNER_WORKSPACE": str(sandbox_workspace(tmp_path / "owner-ws"))}
    data_dir = tmp_path / "data"
    first = serve(env=env, data_dir=data_dir)
    assert httpx.post(f"{first.base}/v1/tools/bash", json={"input": {"command": "true"}}, headers=ALPHA,
                      timeout=60).status_code == 200
    hung = threading.Thread(target=lambda: _swallow(lambda: httpx.post(
        f"{first.base}/v1/tools/bash", json={"input": {"command": "sleep 30", "timeout_s": 60}}, headers=ALPHA,
        timeout=60)), daemon=True)
    hung.start()
    deadline = time.monotonic() + 30
    while len(audit_records(first.base, ALPHA, phase="started")) < 2:
        assert time.monotonic() < deadline, "the long call was never audited as started"
        time.sleep(0.05)  # poll interval against the deadline
    call_id = audit_records(first.base, ALPHA, phase="started")[-1]["call_id"]

    client = docker.from_env(timeout=60)
    try:
        containers = client.containers.list(filters={"label": f"openanalyst.server={server_label(data_dir)}"})
        assert containers
        key_path = (data_dir / "audit-signing.key").resolve()
        for container in containers:
            for mount in container.attrs["Mounts"]:
                source = Path(mount["Source"]).resolve()
                assert source != data_dir.resolve() and source not in key_path.parents, mount
    finally:
        client.close()

    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait(timeout=10)
    hung.join(30)
    second = serve(env=env, data_dir=data_dir, port=first.port)
    closing = [r for r in audit_records(second.base, ALPHA, phase="finished") if r["call_id"] == call_id]
    assert len(closing) == 1, closing
    assert closing[0]["error_code"] == "INTERRUPTED" and closing[0]["decision"] == "allowed"
    verdict = httpx.get(f"{second.base}/v1/audit/verify", headers=ALPHA, timeout=30).json()
    assert verdict["ok"] is True and verdict["records"] == 4, verdict
    key_file = tmp_path / "server.pub"
    key_file.write_text(httpx.get(f"{second.base}/v1/audit/key", headers=ALPHA, timeout=30).text)
    export = tmp_path / "alpha.jsonl"
    export.write_text(httpx.get(f"{second.base}/v1/audit/export", headers=ALPHA, timeout=30).text)
    assert verify_cli(openanalyst_cmd, str(export), "--public-key", str(key_file)).returncode == 0


def _swallow(call: Callable[[], Any]) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the server is killed under this request on purpose
        call()


@pytest.mark.docker
def test_a_full_data_disk_refuses_calls_and_never_runs_them_unaudited(
        serve: Callable[..., Any], sandbox_image: str, openanalyst_cmd: list[str], tmp_path: Path) -> None:
    """With the data directory on a small tmpfs filled up, a call is refused with 503 AUDIT_DISK_FULL and its
    command never runs; once space is freed calls run again and the chain verifies."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(data_dir)], check=True)
    try:
        workspace = sandbox_workspace(tmp_path / "owner-ws")
        server = serve(env={"OPENANALYST_OWNER_WORKSPACE": str(workspace)}, data_dir=data_dir)
        padding = "#" + "x" * 12_000  # large records reach the wall sooner

        def call(i: int) -> httpx.Response:
            return httpx.post(f"{server.base}/v1/tools/bash", timeout=60,
                              json={"input": {"command": f"touch /workspace/ran-{i} {padding}"}})

        assert call(0).status_code == 200 and (workspace / "ran-0").exists()
        filler = data_dir / "filler"
        # Unbuffered, and the suppress outermost: closing a buffered file flushed its rest into the full disk and
        # raised ENOSPC outside the suppress (an intermittent failure under load).
        with contextlib.suppress(OSError), filler.open("wb", buffering=0) as handle:
            while True:  # until ENOSPC
                handle.write(b"\0" * 65536)
        refused = None
        for i in range(1, 400):
            response = call(i)
            if response.status_code == 200:
                assert (workspace / f"ran-{i}").exists()
                continue
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "AUDIT_DISK_FULL", response.text
            if not (workspace / f"ran-{i}").exists():
                refused = i
                break
        assert refused is not None, "the full disk never refused a call"
        for i in range(refused + 1, refused + 4):  # it stays closed while the disk is full
            response = call(i)
            assert response.status_code == 503 and response.json()["error"]["code"] == "AUDIT_DISK_FULL"
            assert not (workspace / f"ran-{i}").exists()
        filler.unlink()
        assert call(1000).status_code == 200 and (workspace / "ran-1000").exists()
        verdict = httpx.get(f"{server.base}/v1/audit/verify", timeout=30).json()
        assert verdict["ok"] is True, verdict
        starts = audit_records(server.base, {}, phase="started", per_page=100)
        assert not any(f"ran-{i} " in json.dumps(r["input"]) for r in starts for i in range(refused, refused + 4))
        assert server.stop() == 0
    finally:
        subprocess.run(["umount", str(data_dir)], check=False)


def test_an_unreadable_signing_key_stops_the_start(serve: Callable[..., Any], tmp_path: Path) -> None:
    """A signing key file that is not an Ed25519 PEM stops the start with a message naming it; the server
    never makes a new key over it (that would silently unsign every chain)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    key = data_dir / "audit-signing.key"
    key.write_text("not a key\n")
    with pytest.raises(AssertionError) as failed:
        serve(data_dir=data_dir)
    assert "cannot open the audit log" in str(failed.value) and str(key) in str(failed.value)
    assert key.read_text() == "not a key\n"
