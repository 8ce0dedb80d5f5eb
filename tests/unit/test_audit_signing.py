"""Ed25519 heads, signed checkpoints, inclusion proofs and the publication hook, on the real AuditLog."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.server
import json
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.audit.cli import EXIT_BAD, EXIT_OK, verify_file, verify_proof_file
from server.audit.log import AuditLog, CheckpointPolicy, PublishConfig
from server.audit.merkle import Frontier, inclusion_path, leaf_hash, node_hash, root_from_path
from server.audit.note import NoteError, parse_checkpoint, sign_note, verify_checkpoint
from server.audit.proofcheck import check_proof
from server.audit.records import genesis_hash, head_mac, seal
from server.audit.recovery import ChainState, sign_head
from server.audit.signing import SigningKey, load_or_create, parse_vkey
from server.audit.verify import verify_lines

pytestmark = pytest.mark.anyio
RESULT = {"output": "ok", "exit_code": 0, "timed_out": False, "truncated": False, "duration_ms": 1.0,
          "limit": None, "error": None}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def one_call(log: AuditLog, tenant: str, n: int) -> None:
    common = {"call_id": f"call_{n}", "session_id": "s", "tool": "bash", "policy": "default",
              "decision": "allowed"}
    await log.started(tenant, input={"command": f"echo {n}"}, **common)
    await log.finished(tenant, result=RESULT, oom_killed=False, container_id=None, image_id=None, **common)


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)  # poll interval against the deadline


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[AuditLog]:
    audit = AuditLog(tmp_path / "audit.db", checkpoints=CheckpointPolicy(every=4, interval_s=3600))
    await audit.open()
    yield audit
    await audit.close()


def reference_root(leaves: list[bytes]) -> bytes:
    """MTH straight from RFC 6962 §2.1, recursively."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(reference_root(leaves[:k]), reference_root(leaves[k:]))


def test_frontier_and_proofs_match_rfc_6962() -> None:
    """The incremental frontier gives RFC 6962's root at every size, and every audit path leads to it."""
    leaves: list[bytes] = []
    frontier = Frontier()
    for n in range(40):
        assert frontier.root() == reference_root(leaves)
        for i in range(len(leaves)):
            path = inclusion_path(i, leaves)
            assert root_from_path(i, len(leaves), leaves[i], path) == frontier.root()
            assert root_from_path(i, len(leaves), leaf_hash("ab" * 32), path) != frontier.root()
        leaf = leaf_hash(hashlib.sha256(str(n).encode()).hexdigest())
        leaves.append(leaf)
        frontier.append(leaf)
        assert Frontier.decode(frontier.size, frontier.encode()).root() == frontier.root()


async def test_checkpoints_every_n_records_are_signed_notes(log: AuditLog) -> None:
    """Every 4 records a checkpoint is stored: origin <key name>/<tenant>, size, the root over the records,
    and a signature line that verifies with the public key (and not with another key)."""
    for n in range(5):
        await one_call(log, "t1", n)  # 10 records: checkpoints at 4 and 8
    rows, total = await log.checkpoints("t1")
    assert total == 2 and [r["tree_size"] for r in rows] == [8, 4]
    note = rows[0]["note"]
    checkpoint = verify_checkpoint(note, log.public_key)
    assert checkpoint.origin == "openanalyst-audit/t1" and checkpoint.size == 8
    lines = list(log.iter_export("t1"))
    leaves = [leaf_hash(json.loads(line)["hash"]) for line in lines[1:9]]
    assert checkpoint.root == reference_root(leaves)
    body, _, sig_line = note.partition("\n\n")
    assert body.split("\n") == ["openanalyst-audit/t1", "8", base64.b64encode(checkpoint.root).decode()]
    assert sig_line.startswith("\u2014 openanalyst-audit ") and sig_line.endswith("\n")
    assert len(base64.b64decode(sig_line.split(" ")[2])) == 4 + 64
    other = load_or_create(Path(str(log.path) + ".other"), "openanalyst-audit").public
    with pytest.raises(NoteError):
        verify_checkpoint(note, other)
    with pytest.raises(NoteError):
        verify_checkpoint(note.replace("\n8\n", "\n9\n"), log.public_key)
    assert parse_checkpoint(note)[0] == checkpoint


async def test_a_checkpoint_follows_growth_after_the_interval(tmp_path: Path) -> None:
    """A tenant that grew but reached no multiple of N gets a checkpoint once the interval has passed."""
    audit = AuditLog(tmp_path / "audit.db", checkpoints=CheckpointPolicy(every=1000, interval_s=0.2))
    await audit.open()
    try:
        await one_call(audit, "t1", 0)

        async def has_checkpoint() -> bool:
            return (await audit.checkpoints("t1"))[1] == 1

        await wait_for(has_checkpoint)
        assert (await audit.checkpoints("t1"))[0][0]["tree_size"] == 2
    finally:
        await audit.close()


async def test_inclusion_proof_verifies_offline(log: AuditLog, tmp_path: Path) -> None:
    """GET /v1/audit/proof's document proves a record is in the signed checkpoint; an edited record or path
    does not; a record after the latest checkpoint is refused with a clear code."""
    for n in range(4):
        await one_call(log, "t1", n)
    key = tmp_path / "key.pub"
    key.write_text(log.public_key.vkey)
    for seq in (1, 3, 8):
        proof = await log.proof("t1", seq)
        assert proof["tree_size"] == 8 and check_proof(proof, log.public_key) is None
        path = tmp_path / f"proof-{seq}.json"
        path.write_text(json.dumps(proof))
        assert verify_proof_file(path, key) == EXIT_OK
    older = await log.proof("t1", 2, tree_size=4)
    assert older["tree_size"] == 4 and check_proof(older, log.public_key) is None
    edited = json.loads(json.dumps(older))
    edited["record"]["output"] = "changed"
    assert "altered" in (check_proof(edited, log.public_key) or "")
    moved = json.loads(json.dumps(older))
    moved["audit_path"][0] = base64.b64encode(b"\0" * 32).decode()
    assert "does not lead" in (check_proof(moved, log.public_key) or "")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(moved))
    assert verify_proof_file(path, key) == EXIT_BAD
    await one_call(log, "t1", 9)
    with pytest.raises(Exception) as refused:
        await log.proof("t1", 9)
    assert getattr(refused.value, "code", None) == "NOT_YET_CHECKPOINTED"


def rechain(records: list[dict[str, Any]], tenant: str) -> list[dict[str, Any]]:
    out, prev = [], genesis_hash(tenant)
    for seq, record in enumerate(records, start=1):
        draft = {k: v for k, v in record.items() if k not in ("seq", "ts", "prev_hash", "hash")}
        sealed = seal(draft, seq=seq, ts=record["ts"], prev_hash=prev)
        out.append(sealed)
        prev = sealed["hash"]
    return out


async def test_a_published_checkpoint_catches_a_rewrite_by_the_key_holder(log: AuditLog, tmp_path: Path) -> None:
    """Someone holding the data directory (and so the signing key) removes record 2, rechains and re-signs:
    the chain and head check out, but the checkpoint published before the rewrite proves the removal."""
    for n in range(3):
        await one_call(log, "t1", n)
    rows, _ = await log.checkpoints("t1")
    published = tmp_path / "checkpoint.txt"
    published.write_text(rows[0]["note"])  # size 4, as a witness kept it
    lines = list(log.iter_export("t1"))
    key = tmp_path / "key.pub"
    key.write_text(json.dumps(log.key_info("t1")))
    honest = tmp_path / "honest.jsonl"
    honest.write_text("".join(lines))
    assert verify_file(honest, public_key=key, checkpoint=published) == EXIT_OK

    records = [json.loads(line) for line in lines[1:-1]]
    forged = rechain(records[:1] + records[2:], "t1")
    frontier = Frontier()
    for record in forged:
        frontier.append(leaf_hash(record["hash"]))
    signer = load_or_create(log.signing_key_path, "openanalyst-audit")  # the stolen key

    head = sign_head(signer, "t1", ChainState(len(forged), forged[-1]["hash"], frontier))
    head_line = json.loads(lines[-1]) | {"seq": head.seq, "hash": head.hash, "root": head.root, "sig": head.mac}
    rewritten = tmp_path / "rewritten.jsonl"
    rewritten.write_text(lines[0] + "".join(json.dumps(r) + "\n" for r in forged) + json.dumps(head_line) + "\n")
    assert verify_file(rewritten, public_key=key) == EXIT_OK  # without a checkpoint nothing shows
    verdict = verify_lines(rewritten.read_text().splitlines(), log.public_key, published.read_text())
    assert not verdict.ok and not verdict.inconclusive and "removed or changed" in (verdict.reason or "")
    assert verify_file(rewritten, public_key=key, checkpoint=published) == EXIT_BAD
    cut = tmp_path / "cut.jsonl"  # an export cut before the checkpoint's size, head re-signed
    head3 = sign_head(signer, "t1", ChainState(3, records[2]["hash"], _frontier(records[:3])))
    cut.write_text(lines[0] + "".join(lines[1:4]) + json.dumps(json.loads(lines[-1]) | {
        "seq": 3, "hash": head3.hash, "root": head3.root, "sig": head3.mac}) + "\n")
    verdict = verify_lines(cut.read_text().splitlines(), log.public_key, published.read_text())
    assert not verdict.ok and verdict.first_bad_seq == 4 and "removed" in (verdict.reason or "")


def _frontier(records: list[dict[str, Any]]) -> Frontier:
    frontier = Frontier()
    for record in records:
        frontier.append(leaf_hash(record["hash"]))
    return frontier


async def test_open_calls_are_closed_as_interrupted(tmp_path: Path) -> None:
    """A started record without its finished one (a crash) gets a finished INTERRUPTED record at the next
    open, with the started record's decision; the chain still verifies."""
    path = tmp_path / "audit.db"
    audit = AuditLog(path)
    await audit.open()
    await one_call(audit, "t1", 0)
    await audit.started("t1", call_id="open_1", session_id="s", tool="bash", input={"command": "sleep 30"},
                        policy="default", decision="allowed")
    await audit.started("t2", call_id="open_2", session_id=None, tool="sleep", input={"seconds": 5},
                        policy="locked", decision="denied", reason="no")
    await audit.close()
    again = AuditLog(path)
    await again.open()
    try:
        for tenant, call, decision, seq in (("t1", "open_1", "allowed", 4), ("t2", "open_2", "denied", 2)):
            records, _ = await again.list(tenant, phase="finished")
            closing = [r for r in records if r["call_id"] == call]
            assert len(closing) == 1 and closing[0]["seq"] == seq
            assert closing[0]["error_code"] == "INTERRUPTED" and closing[0]["decision"] == decision
            assert (await again.verify(tenant))["ok"] is True
    finally:
        await again.close()
    third = AuditLog(path)  # nothing left open: nothing more is written
    await third.open()
    try:
        assert await third.count("t1") == 4 and third.warnings == []
    finally:
        await third.close()


async def test_a_reused_call_id_is_still_closed_as_interrupted(tmp_path: Path) -> None:
    """A session's call ids come from the model provider and may repeat: a call cut off by a crash is closed
    even when an earlier call with the same id finished, so a reused id cannot hide it."""
    path = tmp_path / "audit.db"
    audit = AuditLog(path)
    await audit.open()
    for _ in range(2):  # the same id, finished twice
        await audit.started("t1", call_id="toolu_0", session_id="s", tool="bash", input={"command": "true"},
                            policy="default", decision="allowed")
        await audit.finished("t1", call_id="toolu_0", session_id="s", tool="bash",
                             result={"output": "", "exit_code": 0}, oom_killed=False, container_id=None,
                             image_id=None, policy="default", decision="allowed")
    await audit.started("t1", call_id="toolu_0", session_id="s", tool="bash", input={"command": "sleep 30"},
                        policy="default", decision="allowed")
    await audit.close()
    again = AuditLog(path)
    await again.open()
    try:
        records, _ = await again.list("t1", phase="finished")
        assert [(r["seq"], r["error_code"]) for r in records][-1] == (6, "INTERRUPTED"), records
        assert await again.count("t1", phase="finished") == await again.count("t1", phase="started") == 3
    finally:
        await again.close()
    third = AuditLog(path)  # nothing left open: nothing more is written
    await third.open()
    try:
        assert await third.count("t1") == 6 and third.warnings == []
    finally:
        await third.close()


async def test_a_v1_hmac_database_is_carried_over(tmp_path: Path) -> None:
    """A database whose heads are format-v1 HMACs (with its audit.key present) opens without incident: its
    heads are re-signed with Ed25519 and the chain continues and verifies."""
    path = tmp_path / "audit.db"
    audit = AuditLog(path)
    await audit.open()
    await one_call(audit, "t1", 0)
    await audit.close()
    legacy = b"\x09" * 32
    (tmp_path / "audit.key").write_text(legacy.hex() + "\n")
    with sqlite3.connect(path) as conn:
        seq, last = conn.execute("SELECT seq, hash FROM heads WHERE tenant = 't1'").fetchone()
        conn.execute("UPDATE heads SET alg = 'HMAC-SHA256', mac = ?, root = '', frontier = '' "
                     "WHERE tenant = 't1'", (head_mac(legacy, "t1", seq, last),))
    again = AuditLog(path)
    await again.open()
    try:
        assert again.warnings == []
        await one_call(again, "t1", 1)
        assert (await again.verify("t1"))["ok"] is True
        assert verify_lines(list(again.iter_export("t1")), again.public_key).tail_authenticated
    finally:
        await again.close()


class _Sink(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, str]] = []
    fail_first = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_response(503)
        else:
            type(self).received.append((self.headers["X-OpenAnalyst-Tenant"], body))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def sink() -> Iterator[tuple[str, type[_Sink]]]:
    handler = type("Sink", (_Sink,), {"received": [], "fail_first": 1})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/checkpoints", handler
    server.shutdown()
    server.server_close()


async def test_checkpoints_are_published_to_a_command_and_a_url(tmp_path: Path,
                                                                sink: tuple[str, type[_Sink]]) -> None:
    """Each checkpoint reaches the command (on stdin) and the URL (POST); a failing URL is retried until it
    takes them, and the tool-call path never waits for it."""
    url, handler = sink
    out = tmp_path / "published"
    script = tmp_path / "publish.py"
    script.write_text("import os, sys\nwith open(sys.argv[1], 'a') as f:\n"
                      "    f.write(os.environ['OPENANALYST_AUDIT_TENANT'] + ' ' + sys.stdin.read())\n")
    audit = AuditLog(tmp_path / "audit.db", checkpoints=CheckpointPolicy(every=2, interval_s=3600),
                     publish=PublishConfig(command=f"{sys.executable} {script} {out}", url=url,
                                           retry_min_s=0.05))
    await audit.open()
    try:
        for n in range(2):
            await one_call(audit, "t1", n)
        rows, _ = await audit.checkpoints("t1")
        notes = sorted((r["note"] for r in rows), key=len)

        async def all_published() -> bool:
            return out.exists() and out.read_text().count("openanalyst-audit/t1\n") == 2 \
                and len(handler.received) == 2

        await wait_for(all_published)
        assert {body for _, body in handler.received} == set(notes)
        assert all(tenant == "t1" for tenant, _ in handler.received)
        for note in notes:
            verify_checkpoint(note, audit.public_key)
            assert f"t1 {note}" in out.read_text()
    finally:
        await audit.close()


def test_signed_note_matches_the_go_reference_vector() -> None:
    """Our signed-note signature line and vkey are byte-for-byte those of golang.org/x/mod/sumdb/note's
    documented example (PeterNeumann), so standard signed-note tooling reads our checkpoints."""
    seed = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]
    key = SigningKey(Ed25519PrivateKey.from_private_bytes(seed), "PeterNeumann")
    vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    assert key.public.vkey == vkey and parse_vkey(vkey) == key.public
    text = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
    assert sign_note(text, key) == text + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUg" \
        "YN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"


async def test_a_rolled_back_database_contradicts_what_was_published(tmp_path: Path) -> None:
    """audit.db restored from an older copy (or its last commits lost) agrees with its own head, but not with
    the checkpoints the hook already delivered: the open reports it and verify fails from the first lost seq."""
    path = tmp_path / "audit.db"
    sink = tmp_path / "published"
    script = tmp_path / "publish.py"
    script.write_text("import sys\nopen(sys.argv[1], 'a').write(sys.stdin.read())\n")
    config = PublishConfig(command=f"{sys.executable} {script} {sink}", retry_min_s=0.05)
    audit = AuditLog(path, checkpoints=CheckpointPolicy(every=2, interval_s=3600), publish=config)
    await audit.open()
    await one_call(audit, "t1", 0)
    await audit.close()
    for suffix in ("", "-wal", "-shm"):  # the "backup"
        source = Path(str(path) + suffix)
        if source.exists():
            Path(str(path) + suffix + ".bak").write_bytes(source.read_bytes())
    audit = AuditLog(path, checkpoints=CheckpointPolicy(every=2, interval_s=3600), publish=config)
    await audit.open()
    for n in range(1, 3):
        await one_call(audit, "t1", n)

    async def six_published() -> bool:
        return sink.exists() and "openanalyst-audit/t1\n6\n" in sink.read_text()

    await wait_for(six_published)
    await audit.close()
    for suffix in ("", "-wal", "-shm"):  # roll back
        backup = Path(str(path) + suffix + ".bak")
        target = Path(str(path) + suffix)
        if backup.exists():
            target.write_bytes(backup.read_bytes())
        elif target.exists():
            target.unlink()
    rolled = AuditLog(path, publish=config)
    await rolled.open()
    try:
        assert any("published" in w and "seq 2" in w for w in rolled.warnings), rolled.warnings
        verdict = await rolled.verify("t1")
        assert verdict["ok"] is False and verdict["first_bad_seq"] == 3 and "rolled back" in verdict["reason"]
    finally:
        await rolled.close()
