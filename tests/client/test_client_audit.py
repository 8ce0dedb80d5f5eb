"""Audit through the client: typed pages, the export streamed to a file, and the offline verification of
that file with the server's public key — written from FORMAT.md inside the client, and held against the
server's own verifier on the same files, good and tampered."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agent_support import sandbox_workspace
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from openanalyst_client import AsyncClient, AuditVerificationError, Client, verify_export

from server.audit.signing import parse_vkey
from server.audit.verify import verify_lines as server_verify_lines

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def server(serve: Callable[..., Any], sandbox_image: str, tmp_path: Path) -> Any:
    started = serve(env={"OPENANALYST_OWNER_WORKSPACE": str(sandbox_workspace(tmp_path / "owner-ws"))})
    with Client(started.base, tenant="dora") as oa:
        for n in range(3):  # six records: not a power of two, so the Merkle root's uneven split is exercised
            oa.tools.call("bash", {"command": f"echo record {n}"})
    return started


def _rewrite(source: Path, target: Path, change: Callable[[list[str]], list[str]]) -> Path:
    target.write_text("".join(change(source.read_text().splitlines(keepends=True))))
    return target


def _server_verdict(path: Path, vkey: str) -> tuple[bool, int | None]:
    verdict = server_verify_lines(path.read_text().splitlines(), parse_vkey(vkey))
    return verdict.ok, verdict.first_bad_seq


def test_list_export_and_verify(server: Any, tmp_path: Path) -> None:
    """The export verifies offline with the fetched key, agreeing with the server's own check; the typed
    page filters by tool and phase."""
    with Client(server.base, tenant="dora") as oa:
        page = oa.audit.list(tool="bash", phase="finished")
        assert page.meta.total == 3 and [r.output for r in page.data] == [f"record {n}\n" for n in range(3)]
        assert all(r.tenant == "dora" and r.decision == "allowed" for r in page.data)
        exported = oa.audit.export(tmp_path / "dora.jsonl")
        assert not (tmp_path / "dora.jsonl.part").exists()
        key = oa.audit.key()
        offline = oa.audit.verify(exported, key=key)
        assert (offline.ok, offline.records, offline.first_bad_seq) == (True, 6, None)
        assert oa.audit.verify(exported).ok  # key fetched by the client
        assert oa.audit.verify() == offline  # the server's check of its stored chain: the same verdict
    assert _server_verdict(exported, key.vkey) == (True, None)
    assert verify_export(exported, base64.b64decode(key.public_key)).ok  # raw key bytes work too


def test_tampering_is_found_where_it_happened(server: Any, tmp_path: Path) -> None:
    """An edited output, a removed tail record, a reordered pair and a foreign key each fail, at the same
    first bad seq as the server's verifier names."""
    with Client(server.base, tenant="dora") as oa:
        exported = oa.audit.export(tmp_path / "dora.jsonl")
        key = oa.audit.key()

    def edit_output(lines: list[str]) -> list[str]:
        record = json.loads(lines[4])  # line 1 is the export line: this is seq 4
        record["output"] = "record X\n"
        return [*lines[:4], json.dumps(record) + "\n", *lines[5:]]

    cases = {"edited": (edit_output, 4), "tail removed": (lambda ls: [*ls[:-2], ls[-1]], 6),
             "swapped": (lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], 1)}
    for name, (change, bad_seq) in cases.items():
        broken = _rewrite(exported, tmp_path / f"{name}.jsonl", change)
        verdict = verify_export(broken, key)
        assert (verdict.ok, verdict.first_bad_seq) == (False, bad_seq), (name, verdict)
        assert _server_verdict(broken, key.vkey) == (False, bad_seq), name
    stranger = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    forged = verify_export(exported, stranger)
    assert not forged.ok and "signature" in (forged.reason or "")
    with pytest.raises(AuditVerificationError):
        verify_export(_rewrite(exported, tmp_path / "junk.jsonl", lambda _: ["not json\n"]), key)


def test_filtered_export_and_async(server: Any, tmp_path: Path) -> None:
    """A filtered export (one phase) checks record by record; the async client exports and verifies too."""
    async def scenario() -> None:
        async with AsyncClient(server.base, tenant="dora") as oa:
            path = await oa.audit.export(tmp_path / "started.jsonl", phase="started")
            verdict = await oa.audit.verify(path)
            assert verdict.ok and verdict.records == 3 and "filtered" in (verdict.reason or "")
            whole = await oa.audit.verify(await oa.audit.export(tmp_path / "all.jsonl"))
            assert whole.ok and whole.records == 6

    asyncio.run(scenario())
