"""A second real Docker engine for the module (TLS on 127.0.0.1 and a unix socket), with the sandbox image;
and an sshd on 127.0.0.1 through which the main engine is reached as an `ssh://` engine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from engine_support import SshServer, start_sshd


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshServer]:
    server = start_sshd()
    try:
        yield server
    finally:
        server.stop()
