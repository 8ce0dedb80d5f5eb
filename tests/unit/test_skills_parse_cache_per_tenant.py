"""The catalog's parse cache is keyed by the SKILL.md identity (device, inode, size, mtime, ctime). Inodes are
reused across tenants' workspaces on one filesystem, so the key also names the tenant: a file of tenant B
with the identity a file of tenant A once had is parsed as B's, never served from A's cached parse."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.skills import catalog as catalog_module
from server.skills.catalog import SkillCatalog, TenantRoot
from server.skills.reader import Found, Scan

SAME_IDENTITY = (1, 1234, 60, 1_000_000_000, 1_000_000_000)


def _skill(tenant: str) -> str:
    return f"---\nname: one\ndescription: the skill of {tenant}\n---\nbody\n"


def test_same_file_identity_in_two_workspaces_is_parsed_per_tenant(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_scan(base: Path, relative: tuple[str, ...], previous: dict[str, Found]) -> Scan:
        name = base.name  # the workspace path ends in the tenant id
        return Scan([Found("one", SAME_IDENTITY, _skill(name))], [], present=True)

    monkeypatch.setattr(catalog_module, "scan", fake_scan)

    async def root(tenant_id: str) -> TenantRoot:
        return TenantRoot(tmp_path / tenant_id)

    catalog = SkillCatalog([], root)
    a = asyncio.run(catalog.view("alpha"))
    b = asyncio.run(catalog.view("beta"))
    assert a.skills["one"].description == "the skill of alpha"
    assert b.skills["one"].description == "the skill of beta"
