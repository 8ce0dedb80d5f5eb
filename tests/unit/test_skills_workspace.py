"""A tenant whose quota filesystem is not mounted: its skills are not read from the bare mount point; when
the sandbox cannot be brought up to mount it, they are reported unavailable and the server's still listed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from policies.loader import policy_for
from server.settings import Settings
from server.skills.catalog import SkillCatalog
from server.skills.workspace import WorkspaceRoots
from server.tools.sandbox_backend import SandboxBackend
from toolrunner.config import SandboxConfig
from toolrunner.errors import SandboxImageUnavailable


def test_unmounted_workspace_with_no_sandbox_is_reported(tmp_path: Path) -> None:
    """The image cannot be had: the tenant's skills are one problem naming the reason, never a 500 and never an
    empty list passed off as the tenant's; a tenant without a quota image is read as a plain directory."""
    settings = Settings(data_dir=tmp_path / "data", owner_workspace=tmp_path / "owner")
    (tmp_path / "data" / "quota").mkdir(parents=True)
    (tmp_path / "data" / "quota" / "alice.ext4").write_bytes(b"")  # alice's files live in an image
    (tmp_path / "data" / "workspaces" / "alice").mkdir(parents=True)  # its bare mount point
    plain = tmp_path / "data" / "workspaces" / "bob" / ".openanalyst" / "skills" / "bobs"
    plain.mkdir(parents=True)
    (plain / "SKILL.md").write_text("---\nname: bobs\ndescription: Bob's.\n---\nDo it.\n")
    server = tmp_path / "server" / "shared"
    server.mkdir(parents=True)
    (server / "SKILL.md").write_text("---\nname: shared\ndescription: For all.\n---\nDo it.\n")

    def no_image() -> str:
        raise SandboxImageUnavailable("no sandbox image here")

    def config(tag: str) -> SandboxConfig:
        raise AssertionError("never reached without an image")

    async def main() -> None:
        backend = SandboxBackend(config, no_image, lambda tenant: policy_for("default"))
        catalog = SkillCatalog([tmp_path / "server"], WorkspaceRoots(settings, backend))
        try:
            alice = await catalog.view("alice")
            bob = await catalog.view("bob")
        finally:
            await backend.close()
        assert list(alice.skills) == ["shared"]
        assert [(p.name, p.source) for p in alice.problems] == [(None, "tenant")]
        assert "not mounted" in alice.problems[0].reason and "no sandbox image here" in alice.problems[0].reason
        assert list(bob.skills) == ["bobs", "shared"] and bob.problems == []

    asyncio.run(main())
