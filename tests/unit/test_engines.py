"""Engine addresses are checked at start: plain TCP, passwords and malformed addresses never get through."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_support import make_tls

from toolrunner.engine_attach import attach_request
from toolrunner.engines import EngineAddressError, engine_from_environment, parse_engine

pytestmark = pytest.mark.timeout(30)


def test_unix_addresses() -> None:
    assert parse_engine("unix:///var/run/docker.sock").path == "/var/run/docker.sock"
    assert parse_engine("unix://").path == "/var/run/docker.sock"
    for bad in ("unix://relative.sock", "unix:///x.sock?q=1", "unix://host/x.sock"):
        with pytest.raises(EngineAddressError):
            parse_engine(bad)


def test_tcp_needs_tls_files(tmp_path: Path) -> None:
    with pytest.raises(EngineAddressError, match="needs TLS"):
        parse_engine("tcp://10.0.0.5:2375")
    with pytest.raises(EngineAddressError, match=r"lacks ca\.pem"):
        parse_engine("tcp://10.0.0.5:2376", tls_dir=tmp_path)
    _, client = make_tls(tmp_path / "tls")
    engine = parse_engine("tcp://engine-2.internal", tls_dir=client)
    assert (engine.host, engine.port, engine.url) == ("engine-2.internal", 2376, "tcp://engine-2.internal:2376")
    assert engine.tls is not None and engine.tls.context().verify_mode.name == "CERT_REQUIRED"
    with pytest.raises(EngineAddressError):
        parse_engine("tcp://user:pw@10.0.0.5:2376", tls_dir=client)

    plain = parse_engine("tcp://socket-proxy", allow_plain_tcp=True)  # the operator's explicit choice
    assert (plain.port, plain.tls, plain.url) == (2375, None, "tcp://socket-proxy:2375")


def test_ssh_addresses() -> None:
    engine = parse_engine("ssh://deploy@engine-3:2222")
    assert engine.ssh_argv() == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o",
                                 "ServerAliveInterval=15", "-p", "2222", "-l", "deploy", "--", "engine-3"]
    for bad in ("ssh://u:secret@engine", "ssh://-oProxyCommand=x", "ssh://engine/path", "ftp://engine"):
        with pytest.raises(EngineAddressError):
            parse_engine(bad)


def test_environment_default_is_the_local_socket() -> None:
    assert engine_from_environment({}).url == "unix:///var/run/docker.sock"
    assert engine_from_environment({"DOCKER_HOST": "unix:///run/other.sock"}).path == "/run/other.sock"
    with pytest.raises(EngineAddressError, match="OPENANALYST_DOCKER_PLAIN_TCP"):
        engine_from_environment({"DOCKER_HOST": "tcp://socket-proxy:2375"})
    proxied = engine_from_environment({"DOCKER_HOST": "tcp://socket-proxy:2375", "OPENANALYST_DOCKER_PLAIN_TCP": "1"})
    assert proxied.tls is None and proxied.host == "socket-proxy"


def test_attach_request_quotes_the_id_and_asks_for_an_upgrade() -> None:
    request = attach_request(parse_engine("unix:///d.sock"), "abc/../x", "1.41").decode()
    assert request.startswith("POST /v1.41/containers/abc%2F..%2Fx/attach?stream=1&stdin=1&stdout=1&stderr=1")
    assert "Upgrade: tcp\r\n" in request and request.endswith("\r\n\r\n")
