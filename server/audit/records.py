"""The audit record (format v1, unchanged in log format v2) and its canonical hashing — the one definition
offline verifiers reimplement.

Standard library only: ``server.audit.verify`` and ``server.audit.cli`` import this module and must run where
the server is not installed. The format is described for reimplementers in ``server/audit/FORMAT.md``.

- Canonical JSON: ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
  allow_nan=False)`` encoded as UTF-8.
- ``hash = sha256(canonical_json(record without the "hash" key)).hexdigest()``.
- A tenant's records form a chain: ``prev_hash`` of seq 1 is ``genesis_hash(tenant)``
  = ``sha256("openanalyst-audit-v1:genesis:" + tenant)``, and of seq n > 1 the ``hash`` of seq n-1.
- Log format v2: the head (last seq, last hash, Merkle root) is signed with the server's Ed25519 key over
  ``canonical_json({"type": "head", "v": 2, "tenant", "seq", "hash", "root"})`` (``head_message_v2``).
- Log format v1 (read only, for old exports and for upgrading an old database): the head was an HMAC under the
  tenant's key, ``tenant_key = HMAC-SHA256(server_key, "openanalyst-audit-v1:tenant-key:" + tenant)`` and
  ``mac = HMAC-SHA256(tenant_key, canonical_json({"type": "head", "v": 1, "tenant", "seq", "hash"}))`` in hex.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

FORMAT_VERSION = 1  # of a record: unchanged since v1
LOG_VERSION = 2  # of the head, the export and the checkpoints: Ed25519, see FORMAT.md
ZERO_HASH = "0" * 64
INPUT_CAP = 16 * 1024
OUTPUT_CAP = 16 * 1024
MESSAGE_CAP = 1024
PHASES = ("started", "finished", "connection")
DECISIONS = ("allowed", "denied")
CONNECTION_VERSION = 2  # of a connection record (log format 3): a record kind of its own, see FORMAT.md

# Every record has exactly these keys (values may be null); a verifier rejects missing or extra keys.
FIELDS = frozenset({
    "v", "seq", "ts", "tenant", "session_id", "call_id", "phase", "tool", "policy", "decision", "reason",
    "input", "input_truncated", "input_sha256",
    "exit_code", "timed_out", "oom_killed", "truncated", "limit", "duration_ms",
    "error_code", "error_message",
    "output", "output_truncated", "output_sha256", "container_id", "image_id",
    "prev_hash", "hash",
})
# A ``connection`` record (``"v": 2``): one egress attempt through the proxy, allowed or denied.
CONNECTION_FIELDS = frozenset({
    "v", "seq", "ts", "tenant", "session_id", "call_id", "phase", "tool", "decision", "reason",
    "started_at", "method", "host", "port", "address", "rule", "limit", "error",
    "bytes_up", "bytes_down", "duration_ms", "throttled_ms",
    "prev_hash", "hash",
})


def fields_of(record: Mapping[str, Any]) -> frozenset[str]:
    """The exact key set a record of this version must have (``FIELDS`` for v1, ``CONNECTION_FIELDS`` for v2)."""
    return CONNECTION_FIELDS if record.get("v") == CONNECTION_VERSION else FIELDS


def record_problem(record: Mapping[str, Any]) -> str | None:
    """Why a record's shape is wrong (keys, version, phase for its version), or None."""
    if record.get("v") not in (FORMAT_VERSION, CONNECTION_VERSION):
        return f"unknown format version {record.get('v')!r}"
    expected = fields_of(record)
    if set(record) != expected:
        missing, extra = sorted(expected - set(record)), sorted(set(record) - expected)
        return f"wrong fields (missing {missing}, extra {extra})"
    if (record["phase"] == "connection") != (record["v"] == CONNECTION_VERSION):
        return f"phase {record['phase']!r} in a record of version {record['v']!r}"
    return None


def canonical_json(obj: Any) -> bytes:
    """The byte string that is hashed: sorted keys, no spaces, UTF-8, no NaN/Infinity."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record_hash(record: Mapping[str, Any]) -> str:
    """The hash of a record: over every field except ``hash`` itself."""
    return sha256_hex(canonical_json({k: v for k, v in record.items() if k != "hash"}))


def genesis_hash(tenant: str) -> str:
    """``prev_hash`` of a tenant's first record; tied to the tenant so a chain cannot pass as another's."""
    return sha256_hex(("openanalyst-audit-v1:genesis:" + tenant).encode("utf-8"))


def head_message(tenant: str, seq: int, last_hash: str) -> bytes:
    return canonical_json({"type": "head", "v": FORMAT_VERSION, "tenant": tenant, "seq": seq,
                           "hash": last_hash})


def head_message_v2(tenant: str, seq: int, last_hash: str, root_b64: str) -> bytes:
    """What the server's Ed25519 key signs for a tenant's head (log format v2)."""
    return canonical_json({"type": "head", "v": LOG_VERSION, "tenant": tenant, "seq": seq, "hash": last_hash,
                           "root": root_b64})


def tenant_key(server_key: bytes, tenant: str) -> bytes:
    """The key that signs one tenant's heads: it can be handed to that tenant without exposing the others."""
    return hmac.new(server_key, ("openanalyst-audit-v1:tenant-key:" + tenant).encode("utf-8"),
                    hashlib.sha256).digest()


def head_mac_for(key_of_tenant: bytes, tenant: str, seq: int, last_hash: str) -> str:
    """HMAC-SHA256 of the head under the tenant's key, so removing the tail of a chain is detectable."""
    return hmac.new(key_of_tenant, head_message(tenant, seq, last_hash), hashlib.sha256).hexdigest()


def head_mac(server_key: bytes, tenant: str, seq: int, last_hash: str) -> str:
    """The head's MAC, from the server key."""
    return head_mac_for(tenant_key(server_key, tenant), tenant, seq, last_hash)


def key_id(key: bytes) -> str:
    """A short public fingerprint of the key, so a verifier can say "wrong key" rather than "forged head"."""
    return sha256_hex(b"openanalyst-audit-key-id:" + key)[:16]


def utc_timestamp(when: datetime | None = None) -> str:
    """RFC 3339 UTC with microseconds and a ``Z``, fixed width so strings sort as times."""
    when = (when or datetime.now(UTC)).astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def cap_utf8(text: str, limit: int) -> tuple[str, bool]:
    """At most ``limit`` UTF-8 bytes of ``text``, cut at a character boundary; and whether it was cut."""
    raw = text.encode("utf-8", errors="surrogatepass")
    if len(raw) <= limit:
        return text, False
    return raw[:limit].decode("utf-8", errors="ignore"), True


def jsonable(value: Any) -> Any:
    """Plain JSON data: unknown types become strings, non-finite floats become their names."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)


def _clean_text(value: Any) -> str:
    """Text that encodes as UTF-8 (lone surrogates replaced), so hashing never fails."""
    return str(value).encode("utf-8", errors="replace").decode("utf-8")


def _opt_text(value: Any, limit: int = MESSAGE_CAP) -> str | None:
    return None if value is None else cap_utf8(_clean_text(value), limit)[0]


def _blank(tenant: str, phase: str, *, call_id: str, session_id: str | None, tool: str, policy: str,
           decision: str) -> dict[str, Any]:
    draft: dict[str, Any] = dict.fromkeys(FIELDS)
    draft["input_truncated"] = draft["output_truncated"] = False
    draft.update(v=FORMAT_VERSION, tenant=tenant, phase=phase, call_id=_opt_text(call_id, 256),
                 session_id=_opt_text(session_id, 256), tool=_opt_text(tool, 256),
                 policy=_opt_text(policy, 256),
                 decision=_opt_text(decision, 64))
    del draft["seq"], draft["ts"], draft["prev_hash"], draft["hash"]
    return draft


def started_draft(tenant: str, *, call_id: str, session_id: str | None, tool: str, input: Mapping[str, Any],
                  policy: str, decision: str, reason: str | None) -> dict[str, Any]:
    """A ``started`` record without seq, ts, prev_hash and hash (the writer adds those in order)."""
    draft = _blank(tenant, "started", call_id=call_id, session_id=session_id, tool=tool, policy=policy,
                   decision=decision)
    full = jsonable(input)
    encoded = canonical_json(full)
    draft["input_sha256"] = sha256_hex(encoded)
    if len(encoded) <= INPUT_CAP:
        draft["input"] = full
    else:  # a prefix of the canonical JSON text, as a string
        draft["input"], draft["input_truncated"] = cap_utf8(encoded.decode("utf-8"), INPUT_CAP)[0], True
    draft["reason"] = _opt_text(reason)
    return draft


def finished_draft(tenant: str, *, call_id: str, session_id: str | None, tool: str, result: Mapping[str, Any],
                   oom_killed: bool, container_id: str | None, image_id: str | None, policy: str,
                   decision: str) -> dict[str, Any]:
    """A ``finished`` record without seq, ts, prev_hash and hash; ``result`` holds the ToolResult fields."""
    draft = _blank(tenant, "finished", call_id=call_id, session_id=session_id, tool=tool, policy=policy,
                   decision=decision)
    output = _clean_text(result.get("output") or "")
    draft["output_sha256"] = sha256_hex(output.encode("utf-8"))
    draft["output"], draft["output_truncated"] = cap_utf8(output, OUTPUT_CAP)
    exit_code = result.get("exit_code")
    draft["exit_code"] = exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool) else None
    draft["timed_out"] = bool(result.get("timed_out"))
    draft["truncated"] = bool(result.get("truncated"))
    draft["oom_killed"] = bool(oom_killed)
    draft["limit"] = _opt_text(result.get("limit"), 64)
    duration = result.get("duration_ms")
    # Rounded to microseconds so the float always prints the same way (no exponent) in every language.
    draft["duration_ms"] = round(float(duration), 3) if isinstance(duration, int | float) else None
    error = result.get("error")
    if isinstance(error, Mapping):
        draft["error_code"] = _opt_text(error.get("code"), 64)
        draft["error_message"] = _opt_text(error.get("message"))
    draft["container_id"] = _opt_text(container_id, 256)
    draft["image_id"] = _opt_text(image_id, 256)
    return draft


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _millis(value: Any) -> float:
    return round(float(value), 3) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def connection_draft(tenant: str, conn: Mapping[str, Any]) -> dict[str, Any]:
    """A ``connection`` record without seq, ts, prev_hash and hash, from the proxy's record of one attempt
    (``toolrunner.egress.ConnectionRecord`` as a dict: ``time`` epoch seconds, ``decision`` allow/deny)."""
    started = conn.get("time")
    when = datetime.fromtimestamp(float(started), UTC) if isinstance(started, int | float) else None
    port = conn.get("port")
    decision = "allowed" if conn.get("decision") == "allow" else "denied"
    rule, limit, error = (_opt_text(conn.get(k), 256) for k in ("rule", "limit", "error"))
    return {
        "v": CONNECTION_VERSION, "tenant": tenant, "phase": "connection", "tool": None,
        "session_id": _opt_text(conn.get("session"), 256), "call_id": _opt_text(conn.get("call_id"), 256),
        "decision": decision, "reason": limit or error or (rule if decision == "denied" else None),
        "started_at": utc_timestamp(when) if when else None, "method": _opt_text(conn.get("method"), 16),
        "host": _opt_text(conn.get("host"), 256), "port": _count(port) or None,
        "address": _opt_text(conn.get("address"), 64), "rule": rule, "limit": limit, "error": error,
        "bytes_up": _count(conn.get("bytes_up")), "bytes_down": _count(conn.get("bytes_down")),
        "duration_ms": _millis(conn.get("duration_ms")), "throttled_ms": _millis(conn.get("throttled_ms")),
    }


def seal(draft: Mapping[str, Any], *, seq: int, ts: str, prev_hash: str) -> dict[str, Any]:
    """The finished record: the draft plus its place in the chain and its hash."""
    record = dict(draft, seq=seq, ts=ts, prev_hash=prev_hash)
    record["hash"] = record_hash(record)
    return record
