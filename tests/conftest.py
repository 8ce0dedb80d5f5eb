"""Session-wide fixtures shared by every test directory: the Docker client and the sandbox image.

A missing engine fails the run loudly instead of skipping: the sandbox is the product, not an option.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import pytest
from pg_support import PostgresCluster, postgres_cluster
from store_support import StoreFactory

from server.store.db import Database
from server.store.store import Store
from toolrunner.image import ensure_sandbox_image
from toolrunner.quota import release_all

if TYPE_CHECKING:
    from engine_support import SecondEngine


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_quota_mounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every workspace quota filesystem a test mounted is unmounted (its loop device freed) when the run ends,
    even where a test's own teardown did not get to it."""
    yield
    release_all(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


# Which database the app-level tests run on (docs/scale-out.md section 3): sqlite (the default) or postgresql,
# where every app a test builds through ``make_settings`` gets a fresh database on the run's cluster.
TEST_DATABASE = os.environ.get("OPENANALYST_TEST_DATABASE", "sqlite")
if TEST_DATABASE not in ("sqlite", "postgresql"):
    raise RuntimeError(f"OPENANALYST_TEST_DATABASE must be sqlite or postgresql, not {TEST_DATABASE!r}")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the run (tests/pg_support.py); its absence fails, never skips."""
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None on SQLite; under OPENANALYST_TEST_DATABASE=postgresql a fresh database's URL, dropped after."""
    if TEST_DATABASE == "sqlite":
        yield None
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    url = cluster.database()
    yield url
    cluster.drop(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens stores on each backend in turn (the store-level tests run on both in every run): a new SQLite
    file, or a fresh database on the run's PostgreSQL cluster. Opening twice gives the same database."""
    if request.param == "sqlite":
        def build() -> Store:
            return Database(tmp_path / "server.db")
        yield _factory(build)
        return
    from server.store.postgres import PostgresStore

    cluster: PostgresCluster = request.getfixturevalue("postgres")
    url = cluster.database()
    yield _factory(lambda: PostgresStore(url))
    cluster.drop(url)


def _factory(build: Callable[[], Store]) -> StoreFactory:
    @contextlib.asynccontextmanager
    async def opened() -> AsyncIterator[Store]:
        store = build()
        await store.open()
        try:
            yield store
        finally:
            await store.close()
    return opened


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """One docker-py client for the whole run (a large pool: tests share it across threads)."""
    try:
        client = docker.from_env(max_pool_size=64, timeout=60)
        client.ping()
    except Exception as exc:
        pytest.fail(f"no Docker engine reachable ({exc}); these tests need a real one", pytrace=False)
    yield client
    client.close()


@pytest.fixture(scope="session")
def sandbox_image(docker_client: Any, pytestconfig: pytest.Config) -> str:
    """The current sandbox image's tag, built once if the engine lacks it (progress shown live)."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    shown = capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()

    def progress(line: str) -> None:
        print(f"[sandbox image] {line}", file=sys.stderr, flush=True)

    with shown:
        return ensure_sandbox_image(docker_client, progress)


@pytest.fixture(scope="module")
def second_engine(sandbox_image: str) -> Iterator[SecondEngine]:
    """A second real Docker engine for the module, holding the sandbox image (tests/engine_support.py): the
    engine tests and the two-engine e2e share it."""
    from engine_support import second_engine_with

    with second_engine_with(sandbox_image) as engine:
        yield engine
