"""The skills a tenant sees: the server's directories (in order) and the tenant's own, in its workspace.

Every request scans the directories again (a directory listing and one ``stat`` per skill), re-parses only
the ``SKILL.md`` files whose identity changed, and rebuilds the tenant's ranking index only when the set
changed: edits take effect at the next request, and an unchanged catalog costs no parsing.

Precedence: the server's skills are the operator's and mean the same for every tenant, so a server skill
wins over a tenant's skill of the same name (the first server directory over later ones); the one that
lost is reported as a problem naming both. A tenant never sees another tenant's skills: its own come only
from its own workspace path.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from server.skills.frontmatter import FrontMatterError
from server.skills.model import Problem, Skill, Source, build
from server.skills.ranking import SkillIndex
from server.skills.reader import Found, Scan, scan

TENANT_SKILLS = (".openanalyst", "skills")
"""Where a tenant's skills live, relative to its workspace (the sandbox's ``/workspace``)."""
SANDBOX_WORKSPACE = "/workspace"
MAX_CACHED_TENANTS = 256


@dataclass(frozen=True)
class TenantRoot:
    """Where a tenant's workspace is on the host, and whether its files can be read there now."""

    path: Path
    readable: bool = True
    reason: str | None = None  # why not readable (e.g. its quota filesystem is not mounted)


@dataclass
class View:
    """One tenant's catalog at one snapshot; the index is built on first use."""

    skills: dict[str, Skill]
    problems: list[Problem]
    snapshot: tuple[object, ...]
    _index: SkillIndex | None = field(default=None, repr=False)

    def index(self) -> SkillIndex:
        if self._index is None:
            self._index = SkillIndex(list(self.skills.values()))
        return self._index

    def match(self, query: str, limit: int) -> list[tuple[Skill, float]]:
        return self.index().match(query, limit)


RootResolver = Callable[[str], Awaitable[TenantRoot]]


class SkillCatalog:
    def __init__(self, server_dirs: list[Path], tenant_root: RootResolver) -> None:
        self._server_dirs = [d.expanduser() for d in server_dirs]
        self._tenant_root = tenant_root
        self._found: dict[tuple[str, str], dict[str, Found]] = {}  # (source key) → last scan by directory
        self._parsed: dict[tuple[str, str, tuple[object, ...]], Skill | Problem] = {}
        self._views: OrderedDict[str, View] = OrderedDict()

    async def view(self, tenant_id: str) -> View:
        """The skills ``tenant_id`` sees now (server's and its own), with the problems found reading them."""
        root = await self._tenant_root(tenant_id)
        scans = await asyncio.to_thread(self._scan_all, tenant_id, root)
        snapshot: tuple[object, ...] = (root.readable, *((src, f.directory, f.key, tuple(f.files))
                                                         for src, _, scan_ in scans for f in scan_.found))
        cached = self._views.get(tenant_id)
        if cached is not None and cached.snapshot == snapshot:
            self._views.move_to_end(tenant_id)
            return cached
        view = self._assemble(scans, root, snapshot)
        self._views[tenant_id] = view
        self._views.move_to_end(tenant_id)
        while len(self._views) > MAX_CACHED_TENANTS:
            evicted, _ = self._views.popitem(last=False)
            self._found.pop(("tenant", evicted), None)
        return view

    def _scan_all(self, tenant_id: str, root: TenantRoot) -> list[tuple[str, Source, Scan]]:
        out: list[tuple[str, Source, Scan]] = []
        for i, directory in enumerate(self._server_dirs):
            key = ("server", str(i))
            result = scan(directory, (), self._found.get(key, {}))
            self._found[key] = {f.directory: f for f in result.found}
            out.append((f"server:{i}", "server", result))
        if root.readable:
            key = ("tenant", tenant_id)
            result = scan(root.path, TENANT_SKILLS, self._found.get(key, {}))
            self._found[key] = {f.directory: f for f in result.found}
            out.append((f"tenant:{tenant_id}", "tenant", result))  # parse cache per tenant, not per inode
        return out

    def _assemble(self, scans: list[tuple[str, Source, Scan]], root: TenantRoot,
                  snapshot: tuple[object, ...]) -> View:
        skills: dict[str, Skill] = {}
        problems: list[Problem] = []
        tenant_base = "/".join(TENANT_SKILLS)
        if not root.readable:
            problems.append(Problem(None, "tenant", tenant_base, root.reason or "the workspace is not readable"))
        for label, source, result in scans:
            base = tenant_base if source == "tenant" else ""
            problems.extend(Problem(None, source, base or ".", p) for p in result.problems)
            for found in result.found:
                shown = f"{SANDBOX_WORKSPACE}/{base}/{found.directory}" if source == "tenant" else found.directory
                item = self._parse(label, source, found, shown)
                if isinstance(item, Problem):
                    problems.append(item)
                elif item.name in skills:
                    winner = skills[item.name]
                    problems.append(Problem(item.name, source, f"{shown}/SKILL.md",
                                            f"a {winner.source} skill of the same name ({winner.path}) takes "
                                            "precedence; rename one of them"))
                else:
                    skills[item.name] = item
        return View(dict(sorted(skills.items())), problems, snapshot)

    def _parse(self, label: str, source: Source, found: Found, shown: str) -> Skill | Problem:
        cache_key = (label, found.directory, (found.key, tuple(found.files)))
        cached = self._parsed.get(cache_key)
        if cached is not None:
            return cached
        path = f"{shown}/SKILL.md"
        item: Skill | Problem
        if found.error is not None or found.text is None:
            item = Problem(found.directory, source, path, found.error or "unreadable")
        else:
            try:
                root = str(self._server_dirs[int(label.split(":")[1])]) if source == "server" else None
                item = build(found.text, directory=found.directory, source=source, path=shown,
                             files=found.files, root=root)
            except FrontMatterError as exc:
                item = Problem(found.directory, source, path, str(exc))
        if found.key is not None:
            if len(self._parsed) > 16 * MAX_CACHED_TENANTS:
                self._parsed.clear()
            self._parsed[cache_key] = item
        return item
