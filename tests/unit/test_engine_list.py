"""OPENANALYST_DOCKER_HOSTS is checked whole at start: each bad entry is named by its position and text,
and a good list keeps each engine's TLS directory and capacity."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_support import make_tls
from pydantic import ValidationError

from server.settings import Settings
from toolrunner.engine_list import engines_from_environment, parse_engine_list
from toolrunner.engines import EngineAddressError

pytestmark = pytest.mark.timeout(30)


def test_a_list_of_three_engines(tmp_path: Path) -> None:
    """unix, tcp with TLS and ssh, each with its options; whitespace around entries does not matter."""
    _, client = make_tls(tmp_path / "tls")
    entries = parse_engine_list(f" unix:///var/run/docker.sock capacity=20 ,tcp://10.0.0.5 tls={client} "
                                "capacity=40, ssh://oa@engine-3")
    assert [(e.address.url, e.capacity) for e in entries] == [
        ("unix:///var/run/docker.sock", 20), ("tcp://10.0.0.5:2376", 40), ("ssh://oa@engine-3", None)]
    assert entries[1].address.tls is not None and entries[1].address.tls.ca == client / "ca.pem"


@pytest.mark.parametrize(("text", "named"), [
    ("unix:///a.sock, tcp://10.0.0.5:2376", r"entry 2 \('tcp://10.0.0.5:2376'\): .*needs TLS"),
    ("unix:///a.sock capacity=0", r"entry 1 .*capacity must be a whole number"),
    ("unix:///a.sock capacity=lots", r"entry 1 .*capacity"),
    ("unix:///a.sock, , unix:///b.sock", r"entry 2 .*empty entry"),
    ("unix:///a.sock colour=blue", r"entry 1 .*unknown option 'colour'"),
    ("unix:///a.sock tls", r"entry 1 .*not key=value"),
    ("unix:///a.sock tls=/etc", r"entry 1 .*tls= applies to a tcp:// engine only"),
    ("unix:///a.sock, unix:///a.sock", r"entry 2 .*listed twice"),
    ("ssh://oa:secret@engine-3", r"entry 1 .*never a password"),
])
def test_a_bad_entry_is_named(text: str, named: str) -> None:
    with pytest.raises(EngineAddressError, match=named):
        parse_engine_list(text)


def test_a_tls_directory_without_files_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EngineAddressError, match=r"entry 1 .*lacks ca\.pem"):
        parse_engine_list(f"tcp://10.0.0.5:2376 tls={tmp_path}")


def test_unset_means_the_docker_cli_engine() -> None:
    """Without a list, the one engine DOCKER_HOST names (no bound of its own)."""
    [entry] = engines_from_environment(None, {"DOCKER_HOST": "unix:///run/other.sock"})
    assert (entry.address.url, entry.capacity) == ("unix:///run/other.sock", None)
    [plain] = engines_from_environment("tcp://proxy:2375", {"OPENANALYST_DOCKER_PLAIN_TCP": "1"})
    assert plain.address.tls is None


def test_settings_refuse_a_bad_list_at_start() -> None:
    """The server does not start with a list it cannot use; the message names the entry."""
    with pytest.raises(ValidationError, match=r"entry 2 \('tcp://10.0.0.5'\)"):
        Settings(docker_hosts="unix:///var/run/docker.sock, tcp://10.0.0.5")
    assert Settings(docker_hosts="unix:///var/run/docker.sock capacity=3").docker_hosts is not None
