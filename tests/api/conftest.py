"""Fixtures for the API tests: the real, fully wired app of ``build_app`` (real SQLite in a temp dir, the real
sandbox backend on the real engine) driven in-process over ASGI.

``client`` is an httpx client on the app; ``open_stream`` drives a long-lived SSE response directly over ASGI
(httpx's ASGI transport buffers whole responses) and lets a test read events and then disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from fastapi import FastAPI

from server.app import build_app
from server.services import Services
from server.settings import Settings
from toolrunner.quota import release_all

CLEAN_ENV = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "XAI_API_KEY",
             "OPENROUTER_API_KEY", "OPENANALYST_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
             "AWS_BEARER_TOKEN_BEDROCK", "AWS_SESSION_TOKEN", "OLLAMA_HOST")


@pytest.fixture(autouse=True)
def _no_host_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's own provider variables must not leak into what tests expect."""
    for name in CLEAN_ENV:
        monkeypatch.delenv(name, raising=False)
    for name in list(__import__("os").environ):
        if name.startswith("OPENANALYST_"):
            monkeypatch.delenv(name, raising=False)


RUN = uuid.uuid4().hex[:12]  # every container of this run's API tests carries openanalyst.apitest=RUN


def remove_labelled(docker_client: Any, label: str) -> None:
    for row in docker_client.api.containers(all=True, filters={"label": label}):
        with contextlib.suppress(docker.errors.NotFound):  # the app's own removal may have got there first
            docker_client.api.remove_container(row["Id"], force=True)  # one at a time (the engine's removal bug)


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_containers(docker_client: Any) -> Iterator[None]:
    """A prestart's container create still in flight when its app stopped lands after that test's sweep; by the
    end of the run every test's event loop has closed and waited for its threads, so this sweep finds it."""
    yield
    remove_labelled(docker_client, f"openanalyst.apitest={RUN}")


@pytest.fixture
def make_settings(tmp_path: Path, sandbox_image: str, docker_client: Any,
                  database_url: str | None) -> Iterator[Callable[..., Settings]]:
    """Settings for a test's app; every container its apps started (a session's prestart) is removed after.
    Under OPENANALYST_TEST_DATABASE=postgresql the app keeps its state in a fresh PostgreSQL database."""
    label = f"api-{uuid.uuid4().hex[:12]}"
    workspace = tmp_path / "workspace"  # beside the data directory: a workspace holding it refuses to start
    workspace.mkdir()

    def make(**kw: Any) -> Settings:
        kw.setdefault("data_dir", tmp_path / "data")
        if database_url is not None:
            kw.setdefault("database_url", database_url)
        kw.setdefault("owner_workspace", workspace)
        kw.setdefault("sandbox_labels", {"openanalyst.test": "1", "openanalyst.apitest": RUN,
                                         "openanalyst.apitestcase": label})
        return Settings(**kw)

    yield make
    remove_labelled(docker_client, f"openanalyst.apitestcase={label}")
    release_all(tmp_path)


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.fixture
async def app(make_settings: Callable[..., Settings]) -> FastAPI:
    return build_app(make_settings(sse_keepalive_s=0.2))


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app) as c:
        yield c


@pytest.fixture
def services(app: FastAPI, client: httpx.AsyncClient) -> Services:
    result: Services = app.state.services
    return result


def parse_sse(raw: bytes) -> list[dict[str, Any]]:
    """SSE text → [{"event","id","data"}] (comments as {"comment": text})."""
    out: list[dict[str, Any]] = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        item: dict[str, Any] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                item["comment"] = line[1:].strip()
            else:
                key, _, value = line.partition(": ")
                item[key] = json.loads(value) if key == "data" else int(value) if key == "id" else value
        out.append(item)
    return out


@dataclass
class AsgiStream:
    """One streaming request driven over raw ASGI."""

    app: FastAPI
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    _buffer: bytes = b""
    _chunks: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    _gone: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _sent_body: bool = False
    finished: bool = False

    def start(self) -> None:
        path, _, query = self.path.partition("?")
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                 "method": self.method, "path": path, "raw_path": path.encode(), "query_string": query.encode(),
                 "headers": [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
                 + [(b"content-length", str(len(self.body)).encode())],
                 "client": ("127.0.0.1", 1), "server": ("testserver", 80), "scheme": "http", "root_path": ""}
        self._task = asyncio.create_task(self.app(scope, self._receive, self._send))

    async def _receive(self) -> dict[str, Any]:
        if not self._sent_body:
            self._sent_body = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.response_headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            if message.get("body"):
                await self._chunks.put(message["body"])
            if not message.get("more_body", False):
                await self._chunks.put(None)

    async def read_events(self, count: int, timeout: float = 5.0,
                          include_comments: bool = False) -> list[dict[str, Any]]:
        """The next ``count`` events (fewer if the stream ends first)."""
        out: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while len(out) < count:
                while b"\n\n" in self._buffer and len(out) < count:
                    block, _, self._buffer = self._buffer.partition(b"\n\n")
                    for item in parse_sse(block + b"\n\n"):
                        if include_comments or "comment" not in item:
                            out.append(item)
                if len(out) >= count:
                    break
                chunk = await self._chunks.get()
                if chunk is None:
                    self.finished = True
                    break
                self._buffer += chunk
        return out

    async def disconnect(self) -> None:
        self._gone.set()
        if self._task is not None:
            async with asyncio.timeout(5):
                await self._task


@pytest.fixture
async def open_stream(app: FastAPI, client: httpx.AsyncClient) -> AsyncIterator[Callable[..., AsgiStream]]:
    """``open_stream(path, headers=…, method=…, body=…)`` → a started AsgiStream on the running app."""
    streams: list[AsgiStream] = []

    def opener(path: str, headers: dict[str, str] | None = None, method: str = "GET",
               body: bytes = b"") -> AsgiStream:
        hdrs = {"content-type": "application/json"} if body else {}
        stream = AsgiStream(app, method, path, hdrs | (headers or {}), body)
        stream.start()
        streams.append(stream)
        return stream

    yield opener
    for stream in streams:
        await stream.disconnect()


@pytest.fixture
def run_app() -> Callable[[FastAPI], Any]:
    """``async with run_app(app) as client``: the app's lifespan and an httpx client on it."""
    return running


@pytest.fixture
def asgi_stream() -> type[AsgiStream]:
    """The AsgiStream class, for tests that drive an app of their own (conftest modules are not importable)."""
    return AsgiStream
