"""The client's pure parts, without a server: the retry rule, Retry-After parsing, the SSE decoder, event
parsing, configuration from the environment, and the public names."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openanalyst_client
import pytest
from openanalyst_client._policy import ResumeState, retry_after_seconds, status_delay, transport_delay
from openanalyst_client.config import ClientConfig
from openanalyst_client.events import ErrorEvent, UnknownEvent, parse_event
from openanalyst_client.sse import SSEDecoder

CONFIG = ClientConfig(max_retries=2, max_retry_wait=10)


@pytest.mark.parametrize(("method", "status", "retry_after", "expected"), [
    ("POST", 429, 1.0, 1.0),      # refused before running: any method, as told
    ("POST", 503, 2.0, 2.0),      # the server names a time: it did not start the work
    ("POST", 503, None, None),    # a POST that may have run is not repeated
    ("GET", 503, None, 0.5),      # idempotent: backoff
    ("DELETE", 502, None, 0.5),
    ("POST", 502, None, None),
    ("GET", 429, 60.0, None),     # longer than max_retry_wait: raise at once
    ("GET", 404, None, None),
    ("GET", 500, None, None),
])
def test_retry_rule(method: str, status: int, retry_after: float | None, expected: float | None) -> None:
    """Which answers are retried, after how long, for which methods."""
    assert status_delay(method, status, retry_after, 0, CONFIG) == expected


def test_retries_are_bounded_and_transport_rule() -> None:
    """No retry past max_retries; a connection never opened is retried for any method, a cut after sending
    only for idempotent ones."""
    assert status_delay("GET", 429, 1.0, 2, CONFIG) is None
    request = httpx.Request("POST", "http://x")
    assert transport_delay("POST", httpx.ConnectError("refused", request=request), 0, CONFIG) == 0.5
    assert transport_delay("POST", httpx.ReadError("reset", request=request), 0, CONFIG) is None
    assert transport_delay("GET", httpx.ReadError("reset", request=request), 1, CONFIG) == 1.0


def test_retry_after_forms() -> None:
    """Delta-seconds and HTTP dates are read; junk is ignored."""
    assert retry_after_seconds("3") == 3.0
    later = retry_after_seconds(email.utils.formatdate(time.time() + 30, usegmt=True))
    assert later is not None and 25 <= later <= 31
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_sse_decoder() -> None:
    """Comments skipped, multi-line data joined, id kept, a message without data dropped."""
    decoder = SSEDecoder()
    lines = [": keep-alive", "", "event: tool_output", "id: 7", "data: {\"a\":", "data: 1}", "",
             "event: empty", ""]
    messages = [m for m in map(decoder.feed, lines) if m is not None]
    assert [(m.event, m.data, m.id) for m in messages] == [("tool_output", "{\"a\":\n1}", "7")]


def test_event_parsing() -> None:
    """The SSE event name becomes the type, the id the seq; an unknown type is kept, not refused."""
    error = parse_event("error", '{"code":"SUBSCRIBER_TOO_SLOW","message":"m","status":503,"last_event_id":9}', "12")
    assert isinstance(error, ErrorEvent) and error.seq == 12 and error.last_event_id == 9
    novel = parse_event("brand_new", '{"x": 1}')
    assert isinstance(novel, UnknownEvent) and novel.type == "brand_new" and novel.model_extra == {"x": 1}
    state = ResumeState()
    assert state.accept(error) is False and state.resume_point() == 9  # told where to resume


def test_config_from_environment() -> None:
    """Arguments win over the environment, which wins over the defaults; headers carry key and tenant."""
    env = {"OPENANALYST_SERVER_URL": "http://h:1/", "OPENANALYST_SERVER_API_KEY": "oak_k",
           "OPENANALYST_TENANT": "t1", "OPENANALYST_API_KEY": "a provider's key, never ours"}
    config = ClientConfig.resolve(env=env)
    assert (config.base_url, config.api_key, config.tenant) == ("http://h:1", "oak_k", "t1")
    assert config.headers()["Authorization"] == "Bearer oak_k" and config.headers()["X-Tenant-ID"] == "t1"
    assert ClientConfig.resolve("http://other", tenant="t2", env=env).tenant == "t2"
    assert ClientConfig.resolve(env={}).headers().keys() == {"User-Agent", "Accept"}


def test_public_names() -> None:
    """`__all__` is exactly the public names the package exports, and each exists."""
    public = {name for name in vars(openanalyst_client) if not name.startswith("_")} - {
        "async_client", "audit_verify", "client", "config", "errors", "events", "models", "sse",
        "admin_models", "admin_resources", "run_models", "run_resources", "workspace_models",
        "workspace_resources"}  # submodules, imported on the way
    assert set(openanalyst_client.__all__) == public


def test_imports_nothing_of_the_server() -> None:
    """Users install the client alone: importing it loads none of server, toolrunner or policies."""
    import subprocess
    import sys

    probe = ("import sys, openanalyst_client, openanalyst_client.async_client, openanalyst_client.audit_verify; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'server', 'toolrunner', 'policies'}))")
    shown = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=60,
                           check=True, cwd="/")
    assert shown.stdout.strip() == "[]"


def test_pooled_connections_expire_before_the_server_closes_them() -> None:
    """A kept-alive connection is dropped by the client before the server's default idle timeout closes it, so
    a POST is never sent on a connection the server is closing (it would fail and, unsafe to repeat, not be
    retried)."""
    from server.settings import Settings

    for client in (openanalyst_client.Client("http://127.0.0.1:9"), openanalyst_client.AsyncClient("http://127.0.0.1:9")):
        pool = client._http.client._transport._pool  # httpcore's pool: where the expiry takes effect
        assert 0 < pool._keepalive_expiry < Settings().http_idle_timeout_s / 2


class _Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body of two chunks, cut after the first when ``cut``."""

    def __init__(self, cut: bool) -> None:
        self.cut = cut

    def __iter__(self) -> Iterator[bytes]:
        yield b"first "
        if self.cut:
            raise httpx.ReadError("connection reset mid-body")
        yield b"second"

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self:
            yield chunk


def test_downloads_are_written_whole_or_not_at_all(tmp_path: Path) -> None:
    """A file download and an audit export, blocking and asyncio: a body cut mid-way is a TransportError and
    leaves the target as it was and no ``.part`` file; a whole body replaces the target."""
    cut = True
    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=_Body(cut)))
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with openanalyst_client.Client("http://server", transport=transport) as oa:
        saves: list[Callable[[], Any]] = [lambda: oa.files.download("a/b.bin", target),
                                          lambda: oa.audit.export(target)]

        async def in_async(which: str) -> Path:
            async with openanalyst_client.AsyncClient("http://server", transport=transport) as aoa:
                if which == "files":
                    return await aoa.files.download("a/b.bin", target)
                return await aoa.audit.export(target)
        saves += [lambda: asyncio.run(in_async("files")), lambda: asyncio.run(in_async("audit"))]
        for save in saves:
            cut = True
            with pytest.raises(openanalyst_client.TransportError, match="cut"):
                save()
            assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]
            cut = False
            assert save() == target and target.read_bytes() == b"first second"
            target.write_bytes(b"old")


def test_offline_verifier_takes_connection_records(tmp_path: Path) -> None:
    """An export whose chain holds an egress ``connection`` record (v2, fields of its own) verifies offline
    with the client as it does with the server's verifier; the record edited, both find it at its seq."""
    from openanalyst_client.audit_verify import verify_lines as client_verify_lines

    from server.audit.log import AuditLog
    from server.audit.signing import parse_vkey
    from server.audit.verify import verify_lines as server_verify_lines

    async def export() -> tuple[list[str], dict[str, str]]:
        log = AuditLog(tmp_path / "audit.db")
        await log.open()
        try:
            await log.started("t1", call_id="call_1", session_id=None, tool="bash", input={"command": "curl x"},
                              policy="default", decision="allowed")
            await log.connection("t1", {"time": 1_700_000_000.0, "decision": "allow", "method": "CONNECT",
                                        "host": "pypi.org", "port": 443, "address": "151.101.0.223",
                                        "rule": "pypi.org", "call_id": "call_1", "bytes_up": 10,
                                        "bytes_down": 20, "duration_ms": 5.0})
            await log.finished("t1", call_id="call_1", session_id=None, tool="bash",
                               result={"tool_name": "bash", "output": "ok", "exit_code": 0}, oom_killed=False,
                               container_id=None, image_id=None, policy="default", decision="allowed")
            return list(log.iter_export("t1")), log.key_info("t1")
        finally:
            await log.close()

    lines, key = asyncio.run(export())
    public_key, vkey = key["public_key"], parse_vkey(key["vkey"])
    assert '"phase":"connection"' in lines[2]  # after the export line and the started record
    ours = client_verify_lines(lines, public_key)
    assert (ours.ok, ours.records, ours.first_bad_seq) == (True, 3, None)
    assert server_verify_lines(lines, vkey).ok
    edited = [*lines[:2], lines[2].replace("pypi.org", "evil.org", 1), *lines[3:]]
    assert (client_verify_lines(edited, public_key).first_bad_seq,
            server_verify_lines(edited, vkey).first_bad_seq) == (2, 2)
