"""Where a Docker engine is and how to reach it safely: ``unix://``, ``tcp://`` with TLS, or ``ssh://``.

One ``EngineAddress`` gives both halves of the conversation with an engine: the docker-py client for the
request/response API, and the address ``toolrunner.engine_attach`` dials for the runner's attach stream.
A TCP engine without TLS is refused unless the operator says, with ``OPENANALYST_DOCKER_PLAIN_TCP=1``, that
the port is on a private network of its own (the compose deployment's filtering socket proxy): whoever reaches
such a port can do what it allows. TLS files follow the Docker CLI's layout (``ca.pem``, ``cert.pem``,
``key.pem`` in one directory), and the engine's certificate is always verified.
"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import docker
import docker.constants
import docker.tls

DEFAULT_SOCKET = "/var/run/docker.sock"
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")


class EngineAddressError(ValueError):
    """An engine address or its TLS files are unusable; raised at start, naming the address."""


@dataclass(frozen=True)
class TlsFiles:
    """The client certificate, its key, and the CA that signed the engine's certificate."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, directory: Path) -> TlsFiles:
        files = cls(ca=directory / "ca.pem", cert=directory / "cert.pem", key=directory / "key.pem")
        missing = [p.name for p in (files.ca, files.cert, files.key) if not p.is_file()]
        if missing:
            raise EngineAddressError(f"TLS directory {directory} lacks {', '.join(missing)}")
        return files

    def context(self) -> ssl.SSLContext:
        """A client context that verifies the engine against ``ca`` and presents our certificate."""
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.cert), str(self.key))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


@dataclass(frozen=True)
class EngineAddress:
    """A parsed, checked engine address. ``name`` is what operators and ``GET /v1/sandbox`` see."""

    url: str
    scheme: Literal["unix", "tcp", "ssh"]
    path: str | None = None  # unix
    host: str | None = None  # tcp, ssh
    port: int | None = None
    user: str | None = None  # ssh
    tls: TlsFiles | None = None  # tcp
    ssh_config: Path | None = None  # ssh: an ssh config file with the identity and known hosts to use

    @property
    def name(self) -> str:
        return self.url

    def docker_client(self, *, timeout_s: int, max_pool_size: int) -> Any:
        """A docker-py client for this engine (untyped, like docker-py itself).

        It ignores the process environment: with ``trust_env`` requests would replace our CA with
        ``REQUESTS_CA_BUNDLE`` (so a TLS engine's certificate could not be verified against its own CA) and
        send engine traffic through ``HTTPS_PROXY``. docker-py negotiates the API version in its constructor,
        before ``trust_env`` can be turned off, so it starts at the oldest version it speaks and the version is
        negotiated afterwards.
        """
        common: dict[str, Any] = {"timeout": timeout_s, "max_pool_size": max_pool_size,
                                  "version": docker.constants.MINIMUM_DOCKER_API_VERSION}
        if self.scheme == "unix":
            client = docker.DockerClient(base_url=f"unix://{self.path}", **common)
        elif self.scheme == "tcp" and self.tls is None:  # plain, by the operator's explicit choice
            client = docker.DockerClient(base_url=f"tcp://{self.host}:{self.port}", **common)
        elif self.scheme == "tcp":
            assert self.tls is not None
            tls = docker.tls.TLSConfig(client_cert=(str(self.tls.cert), str(self.tls.key)),
                                       ca_cert=str(self.tls.ca), verify=True)
            client = docker.DockerClient(base_url=f"https://{self.host}:{self.port}", tls=tls, **common)
        else:
            raise EngineAddressError(f"{self.url}: an ssh engine is reached through its tunnel's local socket "
                                     "(toolrunner.ssh_tunnel)")
        client.api.trust_env = False
        try:
            client.api._version = str(client.version(api_version=False)["ApiVersion"])
        except BaseException:
            client.close()
            raise
        return client

    def ssh_argv(self) -> list[str]:
        """``ssh`` to the engine's machine in batch mode (keys only: no prompt can hang a call)."""
        assert self.scheme == "ssh" and self.host is not None
        argv = ["ssh", *(["-F", str(self.ssh_config)] if self.ssh_config is not None else []),
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15"]
        if self.port is not None:
            argv += ["-p", str(self.port)]
        if self.user is not None:
            argv += ["-l", self.user]
        return [*argv, "--", self.host]


def parse_engine(url: str, *, tls_dir: Path | None = None, ssh_config: Path | None = None,
                 allow_plain_tcp: bool = False) -> EngineAddress:
    """Check an engine address; a wrong one stops the start with a message that names it."""
    parts = urlsplit(url.strip())
    if parts.scheme == "unix":
        path = parts.path or DEFAULT_SOCKET
        if parts.netloc or not path.startswith("/") or parts.query or parts.fragment:
            raise EngineAddressError(f"engine {url!r}: a unix address is unix:///absolute/path/to/docker.sock")
        return EngineAddress(url=f"unix://{path}", scheme="unix", path=path)
    if parts.scheme not in ("tcp", "ssh") or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise EngineAddressError(f"engine {url!r}: use unix:///path, tcp://host:port (with TLS) or ssh://[user@]host")
    host = parts.hostname or ""
    if not _HOST.fullmatch(host if ":" not in host else f"[{host}]"):
        raise EngineAddressError(f"engine {url!r}: no valid host name")
    try:
        port = parts.port
    except ValueError as exc:
        raise EngineAddressError(f"engine {url!r}: {exc}") from exc
    shown_host = f"[{host}]" if ":" in host else host
    if parts.scheme == "tcp":
        if parts.username or parts.password:
            raise EngineAddressError(f"engine {url!r}: a tcp address carries no user")
        if tls_dir is None and not allow_plain_tcp:
            raise EngineAddressError(f"engine {url!r}: a TCP engine needs TLS (a directory with ca.pem, cert.pem, "
                                     "key.pem); plain TCP gives root on that machine to anyone who reaches the port "
                                     "(OPENANALYST_DOCKER_PLAIN_TCP=1 accepts it on a private network of its own)")
        port = port or (2376 if tls_dir is not None else 2375)
        return EngineAddress(url=f"tcp://{shown_host}:{port}", scheme="tcp", host=host, port=port,
                             tls=TlsFiles.in_dir(tls_dir) if tls_dir is not None else None)
    user = parts.username
    if parts.password or (user is not None and not _USER.fullmatch(user)):
        raise EngineAddressError(f"engine {url!r}: ssh takes a user name and keys, never a password")
    netloc = f"{user + '@' if user else ''}{shown_host}{':' + str(port) if port else ''}"
    if ssh_config is not None and not ssh_config.is_file():
        raise EngineAddressError(f"engine {url!r}: the ssh config {ssh_config} is not a file")
    return EngineAddress(url=f"ssh://{netloc}", scheme="ssh", host=host, port=port, user=user,
                         ssh_config=ssh_config)


def engine_from_environment(environ: dict[str, str] | None = None) -> EngineAddress:
    """The engine the Docker CLI would use (``DOCKER_HOST``; TLS files from ``DOCKER_CERT_PATH``, or
    ``~/.docker`` under ``DOCKER_TLS_VERIFY``), else the local socket. ``OPENANALYST_SSH_CONFIG`` names the ssh
    config file for an ``ssh://`` engine; ``OPENANALYST_DOCKER_PLAIN_TCP=1`` accepts a TCP engine without TLS."""
    env = os.environ if environ is None else environ
    url = env.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
    cert_path = env.get("DOCKER_CERT_PATH")
    tls_dir = Path(cert_path) if cert_path else (Path.home() / ".docker" if env.get("DOCKER_TLS_VERIFY") else None)
    ssh_config = env.get("OPENANALYST_SSH_CONFIG")
    plain = env.get("OPENANALYST_DOCKER_PLAIN_TCP", "").strip().lower() in ("1", "true", "yes")
    return parse_engine(url, tls_dir=tls_dir, ssh_config=Path(ssh_config) if ssh_config else None,
                        allow_plain_tcp=plain)
