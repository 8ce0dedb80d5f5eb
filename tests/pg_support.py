"""A throwaway PostgreSQL cluster for the tests: Debian's ``initdb`` and ``pg_ctl``, a unix socket in a temp dir.

PostgreSQL refuses to run as root, so under root the cluster belongs to the package's ``postgres`` user
(``runuser``); otherwise to whoever runs the tests. It listens on no TCP port, trusts local connections, skips
fsync (a test cluster needs no durability) and is stopped and deleted when the run ends. A missing PostgreSQL
fails the run: the tests that need it are not optional (.ci/install-system.sh installs it).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

START_TIMEOUT_S = 60


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl); "
                           "apt-get install postgresql (.ci/install-system.sh does)")
    return Path(found[-1]).parent


@dataclass
class PostgresCluster:
    """A running cluster; ``database()`` makes a fresh empty database and returns its URL."""

    socket_dir: Path
    user: str
    restart_command: list[str]

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@/{database}?host={self.socket_dir}"

    def database(self) -> str:
        name = "oa_" + secrets.token_hex(6)
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def restart(self) -> None:
        """Stop the server at once (every connection dropped, as a crash would) and start it again."""
        subprocess.run(self.restart_command, check=True, capture_output=True, timeout=START_TIMEOUT_S + 10)

    def drop(self, url: str) -> None:
        name = url.split("/")[3].split("?")[0]
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """Start a cluster for the duration of the block; stop it and delete its files after."""
    bin_dir = _bin_dir()
    root = Path(tempfile.mkdtemp(prefix="oa-pg-", dir="/tmp"))  # short: a socket path has ~100 bytes
    data, log = root / "data", root / "server.log"
    as_user: list[str] = []
    user = pwd.getpwuid(os.geteuid()).pw_name
    if os.geteuid() == 0:
        user = "postgres"
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
        as_user = ["runuser", "-u", user, "--"]
    started = False
    try:
        subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", user,
                        "--no-sync", "-E", "UTF8", "--locale", "C.UTF-8"],
                       check=True, capture_output=True, timeout=120)
        options = f"-k {root} -c listen_addresses='' -F -c full_page_writes=off -c max_connections=200"
        pg_ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w",
                  "-t", str(START_TIMEOUT_S)]
        subprocess.run([*pg_ctl, "start"], check=True, capture_output=True, timeout=START_TIMEOUT_S + 10)
        started = True
        yield PostgresCluster(root, user, [*pg_ctl, "-m", "immediate", "restart"])
    except subprocess.CalledProcessError as exc:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr.decode(errors='replace')}\n{tail}") from exc
    finally:
        if started:
            subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                            "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
