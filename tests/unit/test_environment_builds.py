"""``Builds``: finished builds keep their state but only the newest keep their progress lines, so a tenant
defining environment after environment does not grow the server's memory by 2,000 lines a build."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from server.environments import builds as builds_mod
from server.environments.builds import BuildLimit, Builds
from toolrunner.envbuild import Built

pytestmark = pytest.mark.timeout(60)


def _work(tag: str) -> Callable[[Callable[[str], None]], Built]:
    def work(progress: Callable[[str], None]) -> Built:
        for i in range(5):
            progress(f"{tag} step {i}")
        return Built.__new__(Built)  # the outcome's fields are not read here
    return work


def test_old_finished_builds_drop_their_lines_and_keep_their_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builds_mod, "KEEP_FINISHED_LINES", 1)

    async def main() -> tuple[list[str], str, int, list[str]]:
        builds = Builds()
        first = builds.start("a", _work("a"))
        await asyncio.wait_for(_ended(first), 30)
        second = builds.start("b", _work("b"))
        await asyncio.wait_for(_ended(second), 30)
        await builds.close()  # gathers the build tasks: their done callbacks (the trimming) have run
        return first.lines, first.state, first.first, second.lines

    old_lines, old_state, old_first, new_lines = asyncio.run(main())
    assert old_lines == [] and old_state == "ready" and old_first == 5
    assert new_lines == [f"b step {i}" for i in range(5)]


def test_an_owner_past_its_cap_is_refused_and_a_shared_build_is_not_counted() -> None:
    async def main() -> None:
        builds = Builds()
        gate = asyncio.Event()
        loop = asyncio.get_running_loop()

        def slow(progress: Callable[[str], None]) -> Built:
            asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(30)
            return Built.__new__(Built)

        builds.start("x", slow, owner="t", max_per_owner=1)
        assert builds.start("x", slow, owner="t", max_per_owner=1).hash == "x"  # the same build, not a new one
        with pytest.raises(BuildLimit):
            builds.start("y", slow, owner="t", max_per_owner=1)
        builds.start("z", slow, owner="u", max_per_owner=1)  # another tenant's count is its own
        assert builds.building("t") == 1 and builds.building("u") == 1
        gate.set()
        await builds.close()

    asyncio.run(main())


async def _ended(build: builds_mod.Build) -> None:
    while build.state == "building":
        await build.changed.wait()
