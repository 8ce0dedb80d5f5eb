"""The offline verifier as a researcher runs it: ``python -m server.audit.cli verify FILE --public-key KEY``
(and ``--key`` for format-v1 exports signed with an HMAC key)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.audit.cli import EXIT_BAD, EXIT_ERROR, EXIT_OK, verify_file
from server.audit.keys import tenant_key_file
from server.audit.log import AuditLog
from server.audit.records import genesis_hash, head_mac, seal

REPO = Path(__file__).resolve().parents[2]


def _bare_python() -> str:
    """The system interpreter (none of the server's dependencies: proof the verifier needs only the stdlib and
    ``cryptography``), if it is new enough and has ``cryptography``; otherwise ours (the import test below
    still checks no web framework is loaded)."""
    candidate = shutil.which("python3", path="/usr/bin:/bin")
    if candidate is not None:
        probe = subprocess.run([candidate, "-c", "import sys, cryptography; sys.exit(sys.version_info < (3, 11))"],
                               capture_output=True, timeout=30, check=False)
        if probe.returncode == 0:
            return candidate
    return sys.executable


BARE_PYTHON = _bare_python()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def exported(tmp_path: Path) -> AsyncIterator[tuple[Path, Path]]:
    """An export of 4 records for tenant t1, and the server's public key (the vkey line)."""
    audit = AuditLog(tmp_path / "data" / "audit.db")
    await audit.open()
    try:
        for n in range(2):
            common = {"call_id": f"c{n}", "session_id": "s", "tool": "python", "policy": "default",
                      "decision": "allowed"}
            await audit.started("t1", input={"code": "print('é')"}, **common)
            await audit.finished("t1", result={"output": "é\n", "exit_code": 0, "duration_ms": 3},
                                 oom_killed=False, container_id=None, image_id=None, **common)
        path = tmp_path / "t1.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            handle.writelines(audit.iter_export("t1"))
        key = tmp_path / "audit.pub"
        key.write_text(audit.public_key.vkey + "\n")
    finally:
        await audit.close()
    yield path, key


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)}
    return subprocess.run([BARE_PYTHON, "-m", "server.audit.cli", "verify", *args], capture_output=True,
                          text=True, timeout=30, env=env, cwd=REPO, check=False)


@pytest.mark.anyio
async def test_cli_accepts_an_untouched_export_with_and_without_key(exported: tuple[Path, Path]) -> None:
    """An untouched export exits 0; without the key the verdict says the tail is unauthenticated."""
    path, key = exported
    keyed = run_cli(str(path), "--public-key", str(key))
    assert keyed.returncode == EXIT_OK, keyed.stderr
    assert keyed.stdout.startswith("OK records=4 first_bad_seq=- tail=authenticated")
    keyless = run_cli(str(path))
    assert keyless.returncode == EXIT_OK, keyless.stderr
    assert "tail=unauthenticated" in keyless.stdout and len(keyless.stdout.splitlines()) == 1


@pytest.mark.anyio
async def test_cli_reports_the_first_bad_seq_of_an_edited_export(exported: tuple[Path, Path]) -> None:
    """Editing a record's output in the file makes the CLI exit 1 and name that record's seq."""
    path, key = exported
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    record = json.loads(lines[3])
    record["output"] = "something else\n"
    lines[3] = json.dumps(record) + "\n"
    path.write_text("".join(lines), encoding="utf-8")
    result = run_cli(str(path), "--public-key", str(key))
    assert result.returncode == EXIT_BAD
    assert result.stdout.startswith("TAMPERED records=4 first_bad_seq=3 ")
    assert "hash does not match" in result.stdout


@pytest.mark.anyio
async def test_cli_catches_a_cut_tail_only_against_the_head(exported: tuple[Path, Path]) -> None:
    """Dropping the last record (head line kept) is caught: the chain ends before the signed head."""
    path, _ = exported
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    del lines[-2]
    path.write_text("".join(lines), encoding="utf-8")
    out = io.StringIO()
    assert verify_file(path, out=out) == EXIT_BAD
    assert "first_bad_seq=4" in out.getvalue() and "tail were removed" in out.getvalue()


@pytest.mark.anyio
async def test_cli_exit_2_when_it_cannot_check(exported: tuple[Path, Path], tmp_path: Path) -> None:
    """A missing file, an unreadable key or another server's key exits 2 with a reason, not a traceback."""
    path, _ = exported
    other = tmp_path / "other.key"
    other.write_text("ab" * 32)
    bad = tmp_path / "bad.key"
    bad.write_text("not hex")
    for args in ([str(tmp_path / "missing.jsonl")], [str(path), "--public-key", str(bad)],
                 [str(path), "--key", str(other)], [str(path), "--public-key", str(tmp_path / "nokey")]):
        result = run_cli(*args)
        assert result.returncode == EXIT_ERROR, (args, result.stdout, result.stderr)
        assert result.stdout.startswith("ERROR ") and "Traceback" not in result.stderr


def test_verifier_modules_import_without_server_dependencies() -> None:
    """The verifier's modules load on a bare interpreter without FastAPI or pydantic."""
    code = ("import sys, server.audit.cli, server.audit.verify; "
            "bad = {'fastapi', 'pydantic', 'starlette'} & set(sys.modules); assert not bad, bad")
    result = subprocess.run([BARE_PYTHON, "-c", code], capture_output=True, text=True, timeout=30,
                            env={"PYTHONPATH": str(REPO)}, cwd=REPO, check=False)
    assert result.returncode == 0, result.stderr


def v1_export(tmp_path: Path, server_key: bytes, tenant: str = "t1") -> Path:
    """An export as format v1 wrote it: records, then a head line with an HMAC under the tenant key."""
    records, prev = [], genesis_hash(tenant)
    for seq in (1, 2):
        draft = {"v": 1, "tenant": tenant, "session_id": None, "call_id": f"c{seq}", "tool": "bash",
                 "policy": "default", "phase": "started", "decision": "allowed", "reason": None,
                 "input": {"command": "true"}, "input_truncated": False, "input_sha256": "0" * 64,
                 "exit_code": None, "timed_out": None, "oom_killed": None, "truncated": None, "limit": None,
                 "duration_ms": None, "error_code": None, "error_message": None, "output": None,
                 "output_truncated": False, "output_sha256": None, "container_id": None, "image_id": None}
        record = seal(draft, seq=seq, ts="2026-01-01T00:00:00.000000Z", prev_hash=prev)
        records.append(json.dumps(record) + "\n")
        prev = record["hash"]
    head = {"type": "head", "v": 1, "tenant": tenant, "seq": 2, "hash": prev,
            "mac": head_mac(server_key, tenant, 2, prev), "mac_alg": "HMAC-SHA256", "filtered": False}
    path = tmp_path / "v1.jsonl"
    path.write_text(json.dumps({"type": "export", "v": 1, "tenant": tenant, "filters": None}) + "\n"
                    + "".join(records) + json.dumps(head) + "\n", encoding="utf-8")
    return path


def test_a_v1_export_still_verifies_with_its_tenant_key(tmp_path: Path) -> None:
    """An old (format v1, HMAC) export checks with its tenant key file; another tenant's key is refused."""
    master = b"\x07" * 32
    path = v1_export(tmp_path, master)
    mine, theirs = tmp_path / "t1.key", tmp_path / "t2.key"
    mine.write_text(tenant_key_file(master, "t1"))
    theirs.write_text(tenant_key_file(master, "t2"))
    ok = run_cli(str(path), "--key", str(mine))
    assert ok.returncode == EXIT_OK and "tail=authenticated" in ok.stdout, ok.stdout
    refused = run_cli(str(path), "--key", str(theirs))
    assert refused.returncode == EXIT_ERROR and "tenant 't2'" in refused.stdout, refused.stdout


@pytest.mark.anyio
async def test_an_hmac_head_is_refused_under_the_public_key(exported: tuple[Path, Path], tmp_path: Path) -> None:
    """A v2 export whose records were edited and whose head was re-made as a v1 HMAC head with a tenant-held
    key (the old ``GET /v1/audit/key``) is rejected when checked with the server's public key."""
    path, public = exported
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    tenant_key = b"\x05" * 32
    records = [json.loads(line) for line in lines[1:-1]]
    records[1]["output"] = "edited"
    prev = genesis_hash("t1")
    for record in records:
        record.update(prev_hash=prev)
        record.update(seal({k: v for k, v in record.items() if k not in ("seq", "ts", "prev_hash", "hash")},
                           seq=record["seq"], ts=record["ts"], prev_hash=prev))
        prev = record["hash"]
    head = {"type": "head", "v": 1, "tenant": "t1", "seq": 4, "hash": prev,
            "mac": head_mac(tenant_key, "t1", 4, prev), "mac_alg": "HMAC-SHA256", "filtered": False}
    path.write_text(lines[0] + "".join(json.dumps(r) + "\n" for r in records) + json.dumps(head) + "\n",
                    encoding="utf-8")
    result = run_cli(str(path), "--public-key", str(public))
    assert result.returncode == EXIT_BAD, result.stdout
    assert "not Ed25519-signed" in result.stdout
