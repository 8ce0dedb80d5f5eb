"""The record format: canonical JSON, hashes, caps and drafts are exactly what FORMAT.md promises."""

from __future__ import annotations

import hashlib
import hmac
import json

from server.audit.records import (
    FIELDS,
    canonical_json,
    cap_utf8,
    finished_draft,
    genesis_hash,
    head_mac,
    jsonable,
    record_hash,
    seal,
    started_draft,
    utc_timestamp,
)


def test_canonical_json_is_sorted_compact_utf8() -> None:
    """Keys are sorted, there is no whitespace and non-ASCII is written as UTF-8, not escaped."""
    expected = '{"a":[1,{"c":null,"d":"é"}],"b":1}'.encode()
    assert canonical_json({"b": 1, "a": [1, {"d": "é", "c": None}]}) == expected


def test_hashes_match_the_documented_recipes() -> None:
    """Genesis, record hash and head MAC are the plain sha256/HMAC recipes a reimplementer would write."""
    assert genesis_hash("t1") == hashlib.sha256(b"openanalyst-audit-v1:genesis:t1").hexdigest()
    record = {"seq": 1, "hash": "ignored", "x": "é"}
    assert record_hash(record) == hashlib.sha256('{"seq":1,"x":"é"}'.encode()).hexdigest()
    message = b'{"hash":"h","seq":3,"tenant":"t1","type":"head","v":1}'
    tenant_key = hmac.new(b"k", b"openanalyst-audit-v1:tenant-key:t1", hashlib.sha256).digest()
    assert head_mac(b"k", "t1", 3, "h") == hmac.new(tenant_key, message, hashlib.sha256).hexdigest()


def test_cap_cuts_at_a_character_boundary() -> None:
    """Capping never splits a multi-byte character and says whether it cut."""
    assert cap_utf8("héllo", 100) == ("héllo", False)
    assert cap_utf8("éé", 3) == ("é", True)


def test_jsonable_makes_any_input_hashable() -> None:
    """NaN, lone surrogates, tuples and unknown objects become plain JSON, so hashing never raises."""
    value = jsonable({"n": float("nan"), "s": "\ud800x", "t": (1, 2), "o": object, 3: True})
    encoded = canonical_json(value)
    assert json.loads(encoded)["n"] == "nan" and json.loads(encoded)["t"] == [1, 2]
    assert json.loads(encoded)["3"] is True and json.loads(encoded)["s"] == "?x"


def test_drafts_have_every_field_once_sealed() -> None:
    """A sealed started or finished record has exactly the documented fields and a self-consistent hash."""
    started = started_draft("t1", call_id="c", session_id=None, tool="bash", input={"command": "ls"},
                            policy="default", decision="allowed", reason=None)
    finished = finished_draft("t1", call_id="c", session_id=None, tool="bash",
                              result={"output": "x", "exit_code": 0, "duration_ms": 1.23456,
                                      "limit": "timeout", "timed_out": True,
                                      "error": {"code": "TIMEOUT", "message": "slow"}},
                              oom_killed=True, container_id="cid", image_id="sha256:i", policy="default",
                              decision="allowed")
    for draft in (started, finished):
        record = seal(draft, seq=1, ts=utc_timestamp(), prev_hash=genesis_hash("t1"))
        assert set(record) == FIELDS
        assert record["hash"] == record_hash(record)
    assert started["input_sha256"] == hashlib.sha256(b'{"command":"ls"}').hexdigest()
    assert started["exit_code"] is None and started["output_sha256"] is None
    assert finished["duration_ms"] == 1.235 and finished["error_code"] == "TIMEOUT"
    assert finished["oom_killed"] is True and finished["limit"] == "timeout"


def test_timestamps_are_fixed_width_utc() -> None:
    """Timestamps are RFC 3339 UTC with microseconds, so string order is time order."""
    stamp = utc_timestamp()
    assert len(stamp) == 27 and stamp.endswith("Z") and stamp[10] == "T"
