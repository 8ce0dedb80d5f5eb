"""Bedrock: event-stream framing (both CRCs checked), SigV4 against AWS's published test vectors, and the
ConverseStream adapter's wire request and exception frames."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from fakes import FakeBedrock, Reply
from fakes.harness import CASES, KEY, drain, request, run, send, text_of, tool_history

from server.providers.credentials import ProviderCredential
from server.providers.eventstream import EventStreamDecoder, EventStreamError, encode_message
from server.providers.registry import make_adapter
from server.providers.sigv4 import sign

CASE = CASES["bedrock"]
SUITE_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SUITE_AT = datetime(2015, 8, 30, 12, 36, tzinfo=UTC)


def frames() -> bytes:
    return encode_message(
        {":event-type": "messageStart", ":message-type": "event"}, b'{"role":"assistant"}'
    ) + encode_message(
        {":event-type": "contentBlockDelta", ":message-type": "event"},
        b'{"contentBlockIndex":0,"delta":{"text":"hi"}}',
    )


def test_eventstream_round_trip_fed_byte_by_byte() -> None:
    """The decoder rebuilds every message however the bytes are split, with headers and payload intact."""
    decoder = EventStreamDecoder()
    out = []
    for byte in frames():
        out += decoder.feed(bytes([byte]))
    assert [m.header(":event-type") for m in out] == ["messageStart", "contentBlockDelta"]
    assert json.loads(out[1].payload) == {"contentBlockIndex": 0, "delta": {"text": "hi"}}
    assert decoder.pending == 0


@pytest.mark.parametrize(("offset", "what"), [(9, "prelude CRC"), (20, "message CRC"), (-1, "message CRC")])
def test_eventstream_rejects_corrupted_bytes(offset: int, what: str) -> None:
    """Flipping one bit in the prelude or the body is caught by the matching CRC."""
    data = bytearray(frames())
    data[offset] ^= 0x01
    with pytest.raises(EventStreamError, match=what):
        EventStreamDecoder().feed(bytes(data))


def test_eventstream_rejects_absurd_length() -> None:
    """A prelude announcing a message larger than the cap is refused before buffering it."""
    import struct
    import zlib

    prelude = struct.pack(">II", 1 << 30, 0)
    with pytest.raises(EventStreamError, match="length"):
        EventStreamDecoder().feed(prelude + struct.pack(">I", zlib.crc32(prelude)))


@pytest.mark.parametrize(
    ("method", "url", "signature"),
    [
        (
            "GET",
            "https://example.amazonaws.com/",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "POST",
            "https://example.amazonaws.com/",
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        ),
        (
            "GET",
            "https://example.amazonaws.com/?Param2=value2&Param1=value1",
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
    ],
)
def test_sigv4_matches_aws_test_suite(method: str, url: str, signature: str) -> None:
    """SigV4 reproduces AWS's get-vanilla, post-vanilla and get-vanilla-query-order-key-case vectors."""
    headers = sign(
        method,
        url,
        {},
        b"",
        access_key="AKIDEXAMPLE",
        secret_key=SUITE_KEY,
        region="us-east-1",
        service="service",
        now=SUITE_AT,
    )
    assert headers["x-amz-date"] == "20150830T123600Z"
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        f"SignedHeaders=host;x-amz-date, Signature={signature}"
    )


def test_request_is_signed_over_the_bytes_sent() -> None:
    """The signature covers the exact path (model id percent-encoded), headers and body that arrived."""
    with FakeBedrock() as fake:
        fake.script([Reply.text("ok")])
        cred = ProviderCredential(
            "bedrock",
            KEY,
            fake.base_url,
            "env",
            {
                "auth": "sigv4",
                "access_key_id": "AKIDEXAMPLE",
                "region": "eu-west-1",
                "session_token": "TOKEN-SECRET-123",
            },
        )

        async def go(client):  # type: ignore[no-untyped-def]
            req = request("us.anthropic.claude-sonnet-4-5-20250929-v1:0", tool_history(), system="Be brief.")
            return await drain(make_adapter("bedrock", client, cred).stream(req))

        events, err = run(go)
        (sent,) = fake.requests
    assert err is None and text_of(events) == "ok"
    assert sent.path == "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream"
    assert sent.headers["x-amz-security-token"] == "TOKEN-SECRET-123"
    when = datetime.strptime(sent.headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    again = sign(
        "POST",
        fake.base_url + sent.path,
        {"content-type": sent.headers["content-type"], "accept": sent.headers["accept"]},
        sent.body,
        access_key="AKIDEXAMPLE",
        secret_key=KEY,
        region="eu-west-1",
        service="bedrock",
        session_token="TOKEN-SECRET-123",
        now=when,
    )
    assert sent.headers["authorization"] == again["authorization"]
    assert "/eu-west-1/bedrock/aws4_request" in sent.headers["authorization"]
    body = sent.json()
    assert body["system"] == [{"text": "Be brief."}]
    assert body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["type"] == "object"
    assert body["messages"][1]["content"][1] == {
        "toolUse": {"toolUseId": "toolu_1", "name": "bash", "input": {"command": "ls"}}
    }
    assert body["messages"][2]["content"][0] == {
        "toolResult": {"toolUseId": "toolu_1", "content": [{"text": "ls: denied"}], "status": "error"}
    }


def test_bearer_token_auth_and_thinking() -> None:
    """With a Bedrock API key the request carries Bearer auth; effort asks Claude for a thinking budget."""
    with FakeBedrock() as fake:
        fake.script([Reply.text("ok")])
        cred = ProviderCredential("bedrock", KEY, fake.base_url, "env", {"auth": "bearer"})

        async def go(client):  # type: ignore[no-untyped-def]
            req = request(CASE.model, effort="low", max_tokens=512)
            return await drain(make_adapter("bedrock", client, cred).stream(req))

        run(go)
        sent = fake.requests[0]
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    fields = sent.json()["additionalModelRequestFields"]
    assert fields == {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert sent.json()["inferenceConfig"]["maxTokens"] > 1024


def test_validation_exception_is_bad_request_and_corrupt_stream_is_retryable() -> None:
    """An exception frame is classified by its type; a frame with a bad CRC fails the attempt cleanly."""
    good = encode_message({":event-type": "messageStart", ":message-type": "event"}, b"{}")
    broken = bytearray(
        encode_message(
            {":event-type": "contentBlockDelta", ":message-type": "event"}, b'{"delta":{"text":"x"}}'
        )
    )
    broken[-6] ^= 0xFF
    with FakeBedrock() as fake:
        fake.script([Reply.stream_error("bad_request"), Reply(raw_body=good + bytes(broken))])
        _, first = send(CASE, fake, request(CASE.model))
        _, second = send(CASE, fake, request(CASE.model))
    assert first is not None and first.kind == "bad_request" and "validationException" in first.message
    assert second is not None and second.kind == "retryable" and "CRC" in second.message
