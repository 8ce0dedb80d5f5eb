"""The offline verifier as a researcher runs it: ``python -m server.audit.cli verify FILE [--key KEY]``."""

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
from server.audit.keys import load_key, tenant_key_file
from server.audit.log import AuditLog

REPO = Path(__file__).resolve().parents[2]


def _bare_python() -> str:
    """The system interpreter (none of the server's dependencies: proof the verifier needs only the stdlib),
    if it is new enough; otherwise ours (the import test below still checks no web framework is loaded)."""
    candidate = shutil.which("python3", path="/usr/bin:/bin")
    if candidate is not None:
        probe = subprocess.run([candidate, "-c", "import sys; sys.exit(sys.version_info < (3, 11))"],
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
    """An export of 4 records for tenant t1, and the server key."""
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
    finally:
        await audit.close()
    yield path, audit.key_path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)}
    return subprocess.run([BARE_PYTHON, "-m", "server.audit.cli", "verify", *args], capture_output=True,
                          text=True, timeout=30, env=env, cwd=REPO, check=False)


@pytest.mark.anyio
async def test_cli_accepts_an_untouched_export_with_and_without_key(exported: tuple[Path, Path]) -> None:
    """An untouched export exits 0; without the key the verdict says the tail is unauthenticated."""
    path, key = exported
    keyed = run_cli(str(path), "--key", str(key))
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
    result = run_cli(str(path), "--key", str(key))
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
    for args in ([str(tmp_path / "missing.jsonl")], [str(path), "--key", str(bad)],
                 [str(path), "--key", str(other)], [str(path), "--key", str(tmp_path / "nokey")]):
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


@pytest.mark.anyio
async def test_a_tenant_key_checks_only_its_own_tenant(exported: tuple[Path, Path], tmp_path: Path) -> None:
    """A key file derived for t1 authenticates t1's export; one derived for another tenant is refused (exit 2)."""
    path, server_key = exported
    master = load_key(server_key)
    mine, theirs = tmp_path / "t1.key", tmp_path / "t2.key"
    mine.write_text(tenant_key_file(master, "t1"))
    theirs.write_text(tenant_key_file(master, "t2"))
    ok = run_cli(str(path), "--key", str(mine))
    assert ok.returncode == EXIT_OK and "tail=authenticated" in ok.stdout, ok.stdout
    refused = run_cli(str(path), "--key", str(theirs))
    assert refused.returncode == EXIT_ERROR and "tenant 't2'" in refused.stdout, refused.stdout
