"""The HTTP rows of ``bench/toolcall.py``: ``POST /v1/tools/{name}`` through ``openanalyst --serve``.

The server runs as a subprocess with its own data directory, the bench's policy file (the client rows' cap)
and the test label on its containers; every request names a tenant (``X-Tenant-ID``), so none of them touch the
owner's workspace. The load rows check the audit promise: finished records = requests answered, 429s included.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from toolrunner.config import SandboxConfig
from toolrunner.docker_backend import DockerBackend
from toolrunner.quota import release_all

TRUE, PY = "true", "python3 -c pass"
TENANT = {"X-Tenant-ID": "bench-api"}
# Below the server's idle timeout (5 s): the client drops an idle connection before the server closes it, so a
# request is never sent on a connection the server is closing (a ReadError, as any client would see).
KEEPALIVE_S = 2.0


@dataclass
class ApiRow:
    what: str
    command: str
    samples_s: list[float] = field(default_factory=list)
    note: str = ""
    rate: float | None = None
    value: str = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(n: int, image: str, policy_file: Path, tenants: int, calls: int) -> list[ApiRow]:
    """Start the server, measure, stop it and remove its containers."""
    exe = shutil.which("openanalyst") or str(Path(sys.executable).with_name("openanalyst"))
    port, data_dir = free_port(), tempfile.mkdtemp(prefix="oa-bench-api-")
    owner_dir = tempfile.mkdtemp(prefix="oa-bench-owner-")  # not the cwd: a root-owned cwd gets a nosuid guard
    env = {**os.environ, "OPENANALYST_DATA_DIR": data_dir, "OPENANALYST_OWNER_WORKSPACE": owner_dir,
           "OPENANALYST_SANDBOX_LABELS": '{"openanalyst.test": "1"}',
           "OPENANALYST_SANDBOX_POLICY": str(policy_file)}
    # The log goes to a file: a pipe nobody reads fills after a few hundred access lines and stalls the server.
    log = tempfile.TemporaryFile(prefix="oa-bench-server-log-")  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen([exe, "--serve", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        if not _up(base, proc):
            log.seek(0)
            tail = log.read().decode(errors="replace").strip().splitlines()[-1:]
            return [ApiRow("HTTP API", "", note=f"the server did not come up: {tail}"[:160], value="n/a")]
        rows = _latency(base, n)
        if rows and not rows[0].value:
            rows.append(_load(base, tenants, calls, in_session=True))
            rows.append(_load(base, tenants, calls, in_session=False))
        return rows
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        asyncio.run(_remove_containers(SandboxConfig(data_dir=Path(data_dir), image=image)))
        for made in (data_dir, owner_dir):
            release_all(Path(made))  # quota mounts and the owner's nosuid guard, before the files go
            shutil.rmtree(made, ignore_errors=True)


def _up(base: str, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 30
    with httpx.Client(base_url=base, timeout=5) as client:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if client.get("/health").status_code < 500:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.1)  # polling a starting process: a readiness check, not synchronisation
    return False


def _latency(base: str, n: int) -> list[ApiRow]:
    rows: list[ApiRow] = []
    limits = httpx.Limits(keepalive_expiry=KEEPALIVE_S)
    with httpx.Client(base_url=base, timeout=60, headers=TENANT, limits=limits) as client:
        first = client.post("/v1/tools/bash", json={"input": {"command": TRUE}})
        if first.status_code != 200:
            return [ApiRow("HTTP API", "", note=f"HTTP {first.status_code}: {first.text[:100]}", value="n/a")]
        session_id = client.post("/sessions").json()["session_id"]
        cases: list[tuple[str, str, str, dict[str, Any], str]] = [
            ("HTTP bash tool, in a session", TRUE, "bash", {"command": TRUE, "session": session_id},
             "the session's shell"),
            ("HTTP bash tool, no session", TRUE, "bash", {"command": TRUE}, "a fresh shell per call"),
            ("HTTP bash tool, in a session", PY, "bash", {"command": PY, "session": session_id}, ""),
            ("HTTP bash tool, no session", PY, "bash", {"command": PY}, ""),
            ("HTTP python tool, no session", "empty program", "python", {"code": "pass"}, "code 'pass'"),
        ]
        for what, command, tool, spec, note in cases:
            session = spec.pop("session", None)
            body: dict[str, Any] = {"input": spec}
            if session is not None:
                body["session_id"] = session
            for _ in range(10):  # warm-up, not recorded
                client.post(f"/v1/tools/{tool}", json=body).raise_for_status()
            samples = []
            for _ in range(n if command == TRUE else max(30, n // 5)):
                t = time.perf_counter()
                client.post(f"/v1/tools/{tool}", json=body).raise_for_status()
                samples.append(time.perf_counter() - t)
            rows.append(ApiRow(what, command, samples, note))
    return rows


def _load(base: str, tenants: int, calls: int, *, in_session: bool) -> ApiRow:
    """``tenants`` x ``calls`` concurrent bash calls through HTTP (in one session per tenant, as an agent
    calls, or each in a fresh shell); every request answered must leave a ``finished`` audit record.

    Each tenant is a client of its own (its own connection pool of ``calls``), as tenants are: one pool of
    ``tenants * calls`` connections cost httpx ~7 ms of CPU per request on this 2-core machine (its pool
    scans every connection per request), more than the server's whole per-call CPU, so the row measured the
    bench's client (docs/speed.md, "HTTP path")."""
    requests = failed = 0

    async def go() -> tuple[list[float], float, int]:
        nonlocal requests, failed
        limits = httpx.Limits(max_connections=calls, keepalive_expiry=KEEPALIVE_S)
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(httpx.AsyncClient(base_url=base, timeout=120, limits=limits))
                       for _ in range(tenants)]
            bodies = []
            for t, client in enumerate(clients):  # start the containers first: this row measures calls, not starts
                headers = {"X-Tenant-ID": f"load{t}{'s' if in_session else ''}"}
                body: dict[str, Any] = {"input": {"command": TRUE}}
                if in_session:
                    body["session_id"] = (await client.post("/sessions", headers=headers)).json()["session_id"]
                (await client.post("/v1/tools/bash", json=body, headers=headers)).raise_for_status()
                bodies.append((headers, body))

            async def one(t: int) -> float | None:
                nonlocal requests, failed
                start = time.perf_counter()
                while True:
                    requests += 1
                    try:
                        answer = await clients[t].post("/v1/tools/bash", json=bodies[t][1], headers=bodies[t][0])
                    except httpx.TransportError:  # counted and shown, not retried: it may have been recorded
                        failed += 1
                        return None
                    if answer.status_code != 429:  # over the per-tenant cap: retry as a client would
                        answer.raise_for_status()
                        return time.perf_counter() - start
                    await asyncio.sleep(float(answer.headers.get("Retry-After", "1")) / 100)

            wall = time.perf_counter()
            timed = await asyncio.gather(*(one(t) for t in range(tenants) for _ in range(calls)))
            wall = time.perf_counter() - wall
            samples = [s for s in timed if s is not None]
            records = 0
            for t, client in enumerate(clients):
                page = await client.get("/v1/audit", params={"phase": "finished", "per_page": 1},
                                        headers=bodies[t][0])
                records += page.json()["meta"]["total"]
            return list(samples), wall, records

    samples, wall, records = asyncio.run(go())
    # Every request answered, 429 refusals included, leaves a finished record (+ one warm-up call per tenant).
    made = requests - failed + tenants
    rate = len(samples) / wall
    how = "in a session each" if in_session else "no session"
    broken = f"; {failed} transport errors" if failed else ""
    return ApiRow(f"HTTP {tenants} tenants x {calls} concurrent, {how}", TRUE, samples,
                  f"{rate:.0f} calls/s; {requests - len(samples) - failed} 429s retried{broken}; finished audit "
                  f"records {records} = requests answered {made}: {records == made}", rate=rate)


async def _remove_containers(config: SandboxConfig) -> None:
    """The API server leaves its containers running for adoption; the bench removes them."""
    backend = DockerBackend(timeout_s=60)
    try:
        for container in await backend.list_managed(config.instance_id):
            await backend.remove(str(container["Id"]))
    finally:
        backend.close()
