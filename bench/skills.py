"""Skills catalog benchmark: ``.venv/bin/python bench/skills.py [--skills 200]`` prints one table.

What a request pays for the catalog, in process (no HTTP): the first look at a tenant (scan, read and parse
every SKILL.md), a look with nothing changed (the scan only: one directory listing and a ``stat`` per skill,
the view and its index reused), a look after one file changed (one re-parse, a new view), building the
FTS5 index, and a BM25 match on it. Half the skills are the server's, half the tenant's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from server.skills.catalog import SkillCatalog, TenantRoot

WORDS = ("report", "csv", "pdf", "chart", "table", "docker", "git", "sql", "image", "log", "test", "api", "yaml",
         "json", "email", "backup", "lint", "secret", "translate", "benchmark", "resize", "extract", "summary")


def write(root: Path, name: str, i: int) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    words = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(12))
    (root / name / "SKILL.md").write_text(f"---\nname: {name}\ndescription: Skill {i} about {words}.\n---\n"
                                          + f"Step {i}: {words}.\n" * 40)


def ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.2f}"


async def timed(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - start)
    return out


async def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        server, workspace = base / "server", base / "ws"
        for i in range(count // 2):
            write(server, f"server-skill-{i}", i)
            write(workspace / ".openanalyst" / "skills", f"tenant-skill-{i}", i + count)

        async def root(tenant: str) -> TenantRoot:
            return TenantRoot(workspace)

        first = []
        for _ in range(5):
            fresh = SkillCatalog([server], root)
            start = time.perf_counter()
            await fresh.view("t")
            first.append(time.perf_counter() - start)
        catalog = SkillCatalog([server], root)
        await catalog.view("t")
        unchanged = await timed(lambda: catalog.view("t"), 50)
        changed = []
        for j in range(20):
            write(server, "server-skill-0", 10_000 + j)
            changed += await timed(lambda: catalog.view("t"), 1)
        view = await catalog.view("t")
        index_build = []
        for _ in range(10):
            view._index = None
            start = time.perf_counter()
            view.index()
            index_build.append(time.perf_counter() - start)
        match = await timed(lambda: asyncio.sleep(0, view.match("make a chart from the csv report", 5)), 200)
        print(f"skills: {count} ({count // 2} server, {count // 2} tenant), medians in ms")
        print("| first look (read + parse all) | unchanged | one file changed | index build | match |")
        print("|---|---|---|---|---|")
        print(f"| {ms(first)} | {ms(unchanged)} | {ms(changed)} | {ms(index_build)} | {ms(match)} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skills", type=int, default=200)
    asyncio.run(main(parser.parse_args().skills))
