"""A second, real Docker engine for the multi-engine tests, started beside the main one and torn down after.

It follows the facts in the shared Docker notes: its own (empty) config file — the main engine's
``daemon.json`` sets ``data-root``, which would clash with the flag — its own socket, data root, exec root, pid
file and bridge interface (made here and deleted after; never ``--bridge none``, which deletes the main
engine's ``docker0``), no iptables changes. It listens on a unix socket and on 127.0.0.1 with mutual TLS,
certificates made here for the run. The sandbox image is copied over with ``docker save | docker load``.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
          *, ca: bool = False, server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_tls(directory: Path) -> tuple[Path, Path]:
    """A CA, the engine's certificate (for 127.0.0.1) and a client certificate: ``(server_dir, client_dir)``,
    each holding ``ca.pem``, ``cert.pem``, ``key.pem`` as the Docker CLI expects."""
    ca_key = _key()
    ca = _cert("openanalyst-test-ca", ca_key, None, ca=True)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    out = []
    for name, server in (("server", True), ("client", False)):
        key = _key()
        cert = _cert(f"openanalyst-test-{name}", key, ("openanalyst-test-ca", ca_key), server=server)
        where = directory / name
        where.mkdir(parents=True, mode=0o700)
        (where / "ca.pem").write_bytes(ca_pem)
        (where / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (where / "key.pem").write_bytes(_pem_key(key))
        os.chmod(where / "key.pem", 0o600)
        out.append(where)
    return out[0], out[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SecondEngine:
    """A running second dockerd: ``unix_url`` for the local socket, ``tcp_url`` + ``client_tls`` for TLS."""

    root: Path
    bridge: str
    tcp_port: int
    client_tls: Path
    process: subprocess.Popen[bytes]
    argv: list[str]

    @property
    def unix_url(self) -> str:
        return f"unix://{self.root}/docker.sock"

    @property
    def tcp_url(self) -> str:
        return f"tcp://127.0.0.1:{self.tcp_port}"

    def client(self) -> Any:
        return docker.DockerClient(base_url=self.unix_url, timeout=60, version="auto")

    def log_tail(self, limit: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "dockerd.log").read_text(errors="replace")[-limit:]
        return ""


def start_second_engine() -> SecondEngine:
    """Start a second dockerd (about 5 s) or fail with its log."""
    if shutil.which("dockerd") is None:
        raise RuntimeError("dockerd is not installed: the multi-engine tests need a second real engine")
    tag = secrets.token_hex(3)
    root = Path(f"/tmp/oa-e2-{tag}")  # short: a unix socket path is limited to 107 bytes
    root.mkdir(mode=0o700)
    bridge = f"oae2{tag}"
    subnet = 200 + secrets.randbelow(50)
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", f"172.31.{subnet}.1/24", "dev", bridge], check=True)
    subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
    server_tls, client_tls = make_tls(root / "tls")
    (root / "daemon.json").write_text("{}")
    port = _free_port()
    argv = ["dockerd", "--config-file", str(root / "daemon.json"), "--host", f"unix://{root}/docker.sock",
            "--host", f"tcp://127.0.0.1:{port}", "--tlsverify", "--tlscacert", str(server_tls / "ca.pem"),
            "--tlscert", str(server_tls / "cert.pem"), "--tlskey", str(server_tls / "key.pem"),
            "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
            "--pidfile", str(root / "docker.pid"), "--bridge", bridge, "--iptables=false", "--ip-masq=false"]
    log = (root / "dockerd.log").open("wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    engine = SecondEngine(root=root, bridge=bridge, tcp_port=port, client_tls=client_tls, process=process,
                          argv=argv)
    _wait_ready(engine)
    return engine


def halt_engine(engine: SecondEngine) -> None:
    """Stop the daemon as a crash or an outage would (its containers die with it); keep its data for
    ``resume_engine``."""
    _terminate(engine.process)


def _terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the daemon has not stopped within STOP_TIMEOUT_S."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def resume_engine(engine: SecondEngine) -> None:
    """Start the halted daemon again on the same data root, socket, port and certificates."""
    log = (engine.root / "dockerd.log").open("ab")
    engine.process = subprocess.Popen(engine.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _wait_ready(engine)


def _wait_ready(engine: SecondEngine) -> None:
    process = engine.process
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            stop_second_engine(engine)
            raise RuntimeError(f"the second dockerd exited {process.returncode}: {engine.log_tail()}")
        with contextlib.suppress(Exception):
            client = engine.client()
            try:
                client.ping()
                return
            finally:
                client.close()
        if time.monotonic() > deadline:
            stop_second_engine(engine)
            raise RuntimeError(f"the second dockerd did not answer within {START_TIMEOUT_S:.0f} s: "
                               f"{engine.log_tail()}")
        time.sleep(0.2)


def copy_image(tag: str, engine: SecondEngine) -> None:
    """``docker save TAG | docker load`` into the second engine (the image moves, no registry involved)."""
    save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
    try:
        load = subprocess.run(["docker", "-H", engine.unix_url, "load", "-q"], stdin=save.stdout,
                              capture_output=True, timeout=300)
    finally:
        assert save.stdout is not None
        save.stdout.close()
        save.wait(60)
    if load.returncode != 0 or save.returncode != 0:
        raise RuntimeError(f"copying {tag} failed: {load.stderr.decode(errors='replace')[-500:]}")


def stop_second_engine(engine: SecondEngine) -> None:
    """Remove its containers (one at a time), stop it, delete its bridge and its directories."""
    if engine.process.poll() is None:
        with contextlib.suppress(Exception):
            client = engine.client()
            try:
                for container in client.containers.list(all=True):
                    container.remove(force=True)
            finally:
                client.close()
        _terminate(engine.process)
    with contextlib.suppress(OSError):
        for line in reversed(Path("/proc/mounts").read_text().splitlines()):
            target = line.split()[1]
            if target.startswith(str(engine.root) + "/"):
                subprocess.run(["umount", "-l", target], check=False)
    subprocess.run(["ip", "link", "del", engine.bridge], check=False, capture_output=True)
    shutil.rmtree(engine.root, ignore_errors=True)


@dataclass
class SshServer:
    """An sshd on 127.0.0.1 that lets root in with one test key; ``config`` is the client's ssh config, with
    the host alias ``oa-engine-test``, that key and the server's host key pinned."""

    root: Path
    config: Path
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


def start_sshd() -> SshServer:
    """sshd -D on a free loopback port with its own host key, authorized key and config; ready when it
    accepts a connection (bounded)."""
    root = Path(f"/tmp/oa-sshd-{secrets.token_hex(3)}")
    root.mkdir(mode=0o700)
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / key)], check=True)
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    host_pub = (root / "host_key.pub").read_text().split()
    port = _free_port()
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root}/host_key\nAuthorizedKeysFile {root}/authorized_keys\n"
        f"PidFile {root}/sshd.pid\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nAllowStreamLocalForwarding yes\n"
        "X11Forwarding no\nPermitTTY no\n")
    (root / "ssh_config").write_text(
        f"Host oa-engine-test\n  HostName 127.0.0.1\n  Port {port}\n  User root\n  IdentityFile {root}/client_key\n"
        f"  IdentitiesOnly yes\n  UserKnownHostsFile {root}/known_hosts\n  StrictHostKeyChecking yes\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    process = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(root / "sshd_config")],
                               stdout=subprocess.DEVNULL, stderr=(root / "sshd.log").open("wb"))
    server = SshServer(root=root, config=root / "ssh_config", process=process)
    deadline = time.monotonic() + 20
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
            if probe.recv(4) == b"SSH-":
                return server
        if process.poll() is not None or time.monotonic() > deadline:
            log = (root / "sshd.log").read_text(errors="replace")[-1500:]
            server.stop()
            raise RuntimeError(f"sshd did not start: {log}")
        time.sleep(0.1)


@contextlib.contextmanager
def second_engine_with(image: str) -> Iterator[SecondEngine]:
    """A second engine holding ``image``, stopped and cleaned up afterwards (the module fixture of the engine
    tests and of the two-engine e2e)."""
    engine = start_second_engine()
    try:
        copy_image(image, engine)
        yield engine
    finally:
        stop_second_engine(engine)
