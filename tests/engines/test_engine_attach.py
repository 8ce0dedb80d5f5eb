"""Sandboxes on another Docker engine, reached over TCP with mutual TLS: the manager creates, verifies and
attaches to the tenant's container there, tool calls run through the attach stream, nothing lands on the main
engine; and an engine that refuses (a wrong certificate, a container it does not have) fails clearly."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from engine_support import SecondEngine, make_tls
from sandbox_support import Harness, make_config, ok

from toolrunner.engine_attach import AttachRefused, open_engine_attach
from toolrunner.engines import parse_engine

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]


def test_tool_calls_run_on_an_engine_reached_over_tls(second_engine: SecondEngine, sandbox_image: str,
                                                      docker_client: Any, tmp_path: Path) -> None:
    """The tenant's container lives on the second engine; its runner answers through the TLS attach stream
    with the hardened identity; the main engine has no container of this server."""
    engine = parse_engine(second_engine.tcp_url, tls_dir=second_engine.client_tls)
    harness = Harness(make_config(tmp_path / "data", sandbox_image), engine=engine)
    try:
        assert ok(harness.bash("alice", "echo over-tls; id -u")).split()[0] == "over-tls"
        assert ok(harness.call("alice", "python", {"code": "print(6 * 7)"})).strip() == "42"
        failed = harness.bash("alice", "exit 3").result
        assert failed.exit_code == 3
        label = f"openanalyst.server={harness.config.instance_id}"
        remote = second_engine.client()
        try:
            there = remote.containers.list(filters={"label": label})
        finally:
            remote.close()
        assert len(there) == 1 and there[0].attrs["HostConfig"]["CapDrop"] == ["ALL"]
        assert docker_client.containers.list(all=True, filters={"label": label}) == []
    finally:
        harness.close()


def test_an_engine_with_another_ca_is_refused(second_engine: SecondEngine, tmp_path: Path) -> None:
    """A client that trusts another CA never talks to the engine: the TLS handshake fails."""
    _, stranger = make_tls(tmp_path / "other-ca")
    engine = parse_engine(second_engine.tcp_url, tls_dir=stranger)

    async def attach() -> None:
        await open_engine_attach(engine, "0" * 64, api_version="1.41", timeout_s=10)
    with pytest.raises(OSError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
        asyncio.run(attach())


def test_attach_to_a_missing_container_names_the_engines_answer(second_engine: SecondEngine) -> None:
    """The engine's 404 comes back as a clear refusal, not a hang or a garbled stream."""
    engine = parse_engine(second_engine.tcp_url, tls_dir=second_engine.client_tls)

    async def attach() -> None:
        await open_engine_attach(engine, f"no-such-{uuid.uuid4().hex}", api_version="1.41", timeout_s=10)
    with pytest.raises(AttachRefused, match="404"):
        asyncio.run(attach())


def test_the_unix_socket_of_the_second_engine_works_too(second_engine: SecondEngine, sandbox_image: str,
                                                         tmp_path: Path) -> None:
    """The same attach path over the engine's local socket."""
    harness = Harness(make_config(tmp_path / "data", sandbox_image), engine=parse_engine(second_engine.unix_url))
    try:
        assert ok(harness.bash("bob", "echo over-unix")).strip() == "over-unix"
    finally:
        harness.close()


def test_docker_client_for_tls_engine_verifies(second_engine: SecondEngine) -> None:
    """The request/response half uses the same certificates: the engine's version comes back."""
    engine = parse_engine(second_engine.tcp_url, tls_dir=second_engine.client_tls)
    client = engine.docker_client(timeout_s=30, max_pool_size=4)
    try:
        assert client.version()["Version"]
    finally:
        client.close()
