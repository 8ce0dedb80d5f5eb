"""The skills catalog: server and tenant sources, isolation, malformed files, hot reload, untrusted
workspaces (symlinks, FIFOs, huge files), and BM25 ranking on a corpus of 24 skills."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from server.skills.catalog import SkillCatalog, TenantRoot, View
from server.skills.reader import MAX_SKILL_BYTES

CORPUS = {
    "csv-report": "Summarise a CSV file into a report with totals and averages per column.",
    "pdf-extract": "Extract text and tables from PDF documents.",
    "git-changelog": "Write a changelog from the git commit history of a repository.",
    "docker-cleanup": "Find and remove unused Docker images, containers and volumes.",
    "sql-explain": "Explain a slow SQL query plan and suggest indexes.",
    "image-resize": "Resize and compress PNG and JPEG images in bulk.",
    "json-validate": "Validate JSON files against a JSON Schema and list the errors.",
    "log-triage": "Scan application log files for errors and group them by cause.",
    "unit-test-writer": "Write pytest unit tests for a Python module.",
    "dependency-audit": "Check a project's dependencies for known vulnerabilities.",
    "markdown-toc": "Generate a table of contents for a Markdown document.",
    "regex-helper": "Build and test a regular expression from examples.",
    "api-client": "Generate a typed HTTP client from an OpenAPI document.",
    "k8s-manifest": "Write Kubernetes deployment and service manifests for an app.",
    "excel-pivot": "Build pivot tables from spreadsheet data in xlsx files.",
    "email-draft": "Draft a polite professional email from bullet points.",
    "timezone-convert": "Convert meeting times between time zones.",
    "secret-scan": "Search a repository for leaked API keys and passwords.",
    "license-check": "List the licenses of a project's dependencies.",
    "benchmark-runner": "Run a micro benchmark several times and report the median and spread.",
    "translate-doc": "Translate a document between English, French and German.",
    "chart-plot": "Plot a line or bar chart from tabular data with matplotlib.",
    "backup-rotate": "Rotate backup archives and keep the last N of each.",
    "yaml-lint": "Lint YAML files for syntax errors and indentation problems.",
}


def write_skill(root: Path, name: str, description: str, body: str = "Do it step by step.", *,
                declared: str | None = None) -> Path:
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "SKILL.md").write_text(f"---\nname: {declared or name}\ndescription: {description}\n---\n{body}\n")
    return directory


class Roots:
    """Tenant id → workspace, as the server resolves it (each tenant only its own path)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.unreadable: set[str] = set()

    async def __call__(self, tenant_id: str) -> TenantRoot:
        path = self.base / tenant_id
        if tenant_id in self.unreadable:
            return TenantRoot(path, False, "not mounted")
        return TenantRoot(path)

    def skills(self, tenant_id: str) -> Path:
        return self.base / tenant_id / ".openanalyst" / "skills"


@pytest.fixture
def roots(tmp_path: Path) -> Roots:
    return Roots(tmp_path / "workspaces")


def view(catalog: SkillCatalog, tenant: str) -> View:
    return asyncio.run(catalog.view(tenant))


def test_server_and_tenant_skills_listed_and_tenants_isolated(tmp_path: Path, roots: Roots) -> None:
    """A tenant sees the server's skills (from every directory) and its own, never another tenant's."""
    first, second = tmp_path / "server-a", tmp_path / "server-b"
    write_skill(first, "csv-report", CORPUS["csv-report"])
    write_skill(second, "pdf-extract", CORPUS["pdf-extract"])
    write_skill(roots.skills("alice"), "alice-only", "Alice's private skill.")
    write_skill(roots.skills("bob"), "bob-only", "Bob's private skill.")
    catalog = SkillCatalog([first, second, tmp_path / "missing"], roots)

    alice = view(catalog, "alice")
    assert {n: s.source for n, s in alice.skills.items()} == {
        "alice-only": "tenant", "csv-report": "server", "pdf-extract": "server"}
    assert alice.skills["alice-only"].path == "/workspace/.openanalyst/skills/alice-only"
    assert alice.problems == []
    bob = view(catalog, "bob")
    assert set(bob.skills) == {"bob-only", "csv-report", "pdf-extract"}
    assert "alice-only" not in {s.name for s, _ in bob.match("alice private skill", 10)}
    assert set(view(catalog, "carol").skills) == {"csv-report", "pdf-extract"}


def test_malformed_skill_reported_and_hides_nothing(tmp_path: Path, roots: Roots) -> None:
    """A broken SKILL.md is a problem naming the skill and the reason; the others are still listed."""
    write_skill(roots.skills("alice"), "good", "A fine skill.")
    broken = roots.skills("alice") / "broken"
    broken.mkdir()
    (broken / "SKILL.md").write_text("---\nname: broken\ndescription: [unclosed\n---\nbody\n")
    (roots.skills("alice") / "empty").mkdir()
    write_skill(roots.skills("alice"), "renamed", "Mismatch.", declared="other-name")
    current = view(SkillCatalog([], roots), "alice")
    assert list(current.skills) == ["good"]
    reasons = {p.name: p.reason for p in current.problems}
    assert set(reasons) == {"broken", "empty", "renamed"}
    assert "flow list must close" in reasons["broken"]
    assert "no SKILL.md" in reasons["empty"]
    assert "does not match its directory" in reasons["renamed"]
    assert all(p.source == "tenant" for p in current.problems)


def test_server_skill_wins_a_name_clash(tmp_path: Path, roots: Roots) -> None:
    """A tenant's skill named like a server skill does not replace it; the clash is reported."""
    server = tmp_path / "server"
    write_skill(server, "csv-report", "The operator's version.")
    write_skill(roots.skills("alice"), "csv-report", "Alice's version.")
    current = view(SkillCatalog([server], roots), "alice")
    assert current.skills["csv-report"].description == "The operator's version."
    assert [(p.name, p.source) for p in current.problems] == [("csv-report", "tenant")]
    assert "takes precedence" in current.problems[0].reason


def test_hot_reload_without_restart(tmp_path: Path, roots: Roots) -> None:
    """Adding, editing and removing skill files shows at the next look; an unchanged catalog is reused."""
    catalog = SkillCatalog([], roots)
    skills = roots.skills("alice")
    write_skill(skills, "one", "First version.")
    before = view(catalog, "alice")
    assert view(catalog, "alice") is before  # nothing changed: same view, no re-parse, no new index
    write_skill(skills, "one", "Second version, rewritten with a longer description.")
    write_skill(skills, "two", "Another skill.")
    after = view(catalog, "alice")
    assert after.skills["one"].description.startswith("Second version")
    assert set(after.skills) == {"one", "two"}
    assert [s.name for s, _ in after.match("rewritten", 5)] == ["one"]
    (skills / "two" / "SKILL.md").unlink()
    (skills / "two").rmdir()
    assert set(view(catalog, "alice").skills) == {"one"}


def test_hostile_workspace_is_not_followed(tmp_path: Path, roots: Roots) -> None:
    """Symlinks (to a skill directory, to SKILL.md, or the skills directory itself) are refused, FIFOs and
    oversized files are not read: a tenant cannot make the server read host files or block on a pipe."""
    outside = tmp_path / "host-secret"
    write_skill(outside, "stolen", "Host files.")
    skills = roots.skills("alice")
    skills.mkdir(parents=True)
    (skills / "linked-dir").symlink_to(outside / "stolen")
    (skills / "linked-file").mkdir()
    (skills / "linked-file" / "SKILL.md").symlink_to(outside / "stolen" / "SKILL.md")
    (skills / "pipe").mkdir()
    os.mkfifo(skills / "pipe" / "SKILL.md")
    write_skill(skills, "huge", "x", body="y" * (MAX_SKILL_BYTES + 10))
    current = view(SkillCatalog([], roots), "alice")
    assert current.skills == {}
    reasons = {p.name: p.reason for p in current.problems}
    assert "symbolic link" in reasons["linked-dir"] and "symbolic link" in reasons["linked-file"]
    assert "not a regular file" in reasons["pipe"] and "at most" in reasons["huge"]

    (roots.base / "bob" / ".openanalyst").mkdir(parents=True)
    (roots.base / "bob" / ".openanalyst" / "skills").symlink_to(outside)
    bob = view(SkillCatalog([], roots), "bob")
    assert bob.skills == {} and "symbolic link" in bob.problems[0].reason


def test_unreadable_workspace_still_lists_server_skills(tmp_path: Path, roots: Roots) -> None:
    """A tenant whose workspace cannot be read now (quota filesystem not mounted) still gets the server's
    skills, and a problem saying why its own are missing."""
    server = tmp_path / "server"
    write_skill(server, "csv-report", CORPUS["csv-report"])
    write_skill(roots.skills("alice"), "mine", "Mine.")
    roots.unreadable.add("alice")
    current = view(SkillCatalog([server], roots), "alice")
    assert list(current.skills) == ["csv-report"]
    assert current.problems[0].name is None and current.problems[0].reason == "not mounted"


@pytest.mark.parametrize(("query", "expected"), [
    ("summarise this CSV into a report", "csv-report"),
    ("pull the tables out of a pdf", "pdf-extract"),
    ("remove old docker images", "docker-cleanup"),
    ("why is my sql query slow", "sql-explain"),
    ("check for leaked passwords in the repo", "secret-scan"),
    ("make a bar chart of this data", "chart-plot"),
    ("write tests for my python module", "unit-test-writer"),
    ("lint the yaml config", "yaml-lint"),
])
def test_ranking_puts_the_obvious_skill_first(tmp_path: Path, roots: Roots, query: str, expected: str) -> None:
    """BM25 over name, description and instructions ranks the obvious skill first among 24."""
    server = tmp_path / "server"
    for name, description in CORPUS.items():
        write_skill(server, name, description, body=f"Instructions for {name.replace('-', ' ')}.")
    found = view(SkillCatalog([server], roots), "alice").match(query, 5)
    assert found[0][0].name == expected, found
    scores = [score for _, score in found]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)


def test_query_syntax_is_never_interpreted(tmp_path: Path, roots: Roots) -> None:
    """FTS5 operators in a query are plain words; a query of only punctuation matches nothing."""
    write_skill(tmp_path / "server", "csv-report", CORPUS["csv-report"])
    current = view(SkillCatalog([tmp_path / "server"], roots), "alice")
    assert [s.name for s, _ in current.match('csv" OR NEAR(report* AND -x', 5)] == ["csv-report"]
    assert current.match("*** ()", 5) == []


def test_server_skill_bundle_reads_text_files_only(tmp_path: Path) -> None:
    """A server skill's files to copy into a sandbox: text files, two levels deep; links, binaries and files
    over the per-file cap are left out with the reason."""
    from server.skills.reader import MAX_BUNDLE_FILE_BYTES, read_bundle, scan

    skill = write_skill(tmp_path / "server", "tool-kit", "Kit.")
    (skill / "scripts").mkdir()
    (skill / "scripts" / "run.sh").write_text("echo run\n")
    (skill / "notes.md").write_text("notes\n")
    (skill / "blob.bin").write_bytes(b"\xff\xfe\x00")
    (skill / "big.txt").write_text("x" * (MAX_BUNDLE_FILE_BYTES + 1))
    (skill / "link.txt").symlink_to(tmp_path / "elsewhere.txt")
    found = scan(tmp_path / "server", (), {}).found[0]
    assert found.files == ["big.txt", "blob.bin", "notes.md", "scripts/run.sh"]  # the link is not listed
    texts, skipped = read_bundle(tmp_path / "server", "tool-kit", [*found.files, "link.txt"])
    assert texts == [("notes.md", "notes\n"), ("scripts/run.sh", "echo run\n")]
    assert [s.split(":")[0] for s in skipped] == ["big.txt", "blob.bin", "link.txt"]
    assert "not followed" in skipped[-1]
