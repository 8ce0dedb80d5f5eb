"""Skills end to end: the server as a real process with a server skills directory, tenants writing their own
skills with the file tools into their (quota-mounted) workspaces, a fake Anthropic speaking the real wire
format that calls the `skill` tool and then `bash` on the skill's script in the real sandbox, audited."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_support import read_until_idle, sandbox_workspace, server_env
from fakes.anthropic import FakeAnthropic
from fakes.reply import Reply

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(240)]

ALICE = {"X-Tenant-ID": "alice"}
BOB = {"X-Tenant-ID": "bob"}
SKILL_DIR = ".openanalyst/skills/word-count"
WORD_COUNT = """---
name: word-count
description: Count the words in a text file and report the total.
allowed-tools: bash
---
Run `sh /workspace/.openanalyst/skills/word-count/scripts/count.sh <file>` and report the number it prints.
"""
SCRIPT = 'printf "words: %s\\n" "$(wc -w < "$1" | tr -d " ")"\n'


def server_skill(root: Path, name: str, description: str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "SKILL.md").write_text(f"---\nname: {name}\ndescription: {description}\n---\nSteps for {name}.\n")


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def skills_server(serve: Callable[..., Any], fake: FakeAnthropic, sandbox_image: str, tmp_path: Path) -> Any:
    shared = tmp_path / "server-skills"
    server_skill(shared, "pdf-extract", "Extract text and tables from PDF documents.")
    server_skill(shared, "git-changelog", "Write a changelog from the git commit history.")
    server_skill(shared, "hello-report", "Greet the user by name in a one-line report.")
    (shared / "hello-report" / "scripts").mkdir()
    (shared / "hello-report" / "scripts" / "hello.sh").write_text('echo "hello, $1 (uid $(id -u))"\n')
    (shared / "hello-report" / "logo.bin").write_bytes(b"\x89PNG\x00\xff")
    env = server_env(fake.base_url, sandbox_workspace(tmp_path / "owner-ws"), OPENANALYST_SKILLS_DIRS=str(shared))
    return serve(env=env, data_dir=tmp_path / "data")


def tool(base: str, name: str, args: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    response = httpx.post(f"{base}/v1/tools/{name}", json={"input": args}, headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] is None, body
    return body


def skills(base: str, headers: dict[str, str]) -> dict[str, Any]:
    response = httpx.get(f"{base}/v1/skills", headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_skills_listed_matched_isolated_reloaded(skills_server: Any) -> None:
    """A tenant's skills written with the file tools appear next to the server's, only for that tenant; an
    edit shows at once; a malformed one is reported by name; match ranks with BM25 scores."""
    base = skills_server.base
    before = skills(base, ALICE)
    assert [(s["name"], s["source"]) for s in before["data"]] == [("git-changelog", "server"),
                                                                   ("hello-report", "server"),
                                                                   ("pdf-extract", "server")]
    assert before["problems"] == []

    tool(base, "write_file", {"path": f"{SKILL_DIR}/SKILL.md", "content": WORD_COUNT}, ALICE)
    tool(base, "write_file", {"path": f"{SKILL_DIR}/scripts/count.sh", "content": SCRIPT}, ALICE)
    tool(base, "write_file", {"path": ".openanalyst/skills/broken/SKILL.md", "content": "name: broken\n"}, ALICE)

    listed = skills(base, ALICE)
    mine = next(s for s in listed["data"] if s["name"] == "word-count")
    assert mine["source"] == "tenant" and mine["path"] == f"/workspace/{SKILL_DIR}"
    assert mine["files"] == ["scripts/count.sh"] and mine["allowed_tools"] == ["bash"]
    assert [(p["name"], p["source"]) for p in listed["problems"]] == [("broken", "tenant")]
    assert "starts with a '---'" in listed["problems"][0]["reason"]
    assert {s["name"] for s in skills(base, BOB)["data"]} == {"git-changelog", "hello-report", "pdf-extract"}

    tool(base, "edit_file", {"path": f"{SKILL_DIR}/SKILL.md", "old_string": "and report the total",
                             "new_string": "and print a tally"}, ALICE)
    edited = next(s for s in skills(base, ALICE)["data"] if s["name"] == "word-count")
    assert edited["description"] == "Count the words in a text file and print a tally."

    match = httpx.post(f"{base}/v1/skills/match", json={"query": "how many words are in notes.txt", "limit": 3},
                       headers=ALICE, timeout=60).json()
    assert match["data"][0]["name"] == "word-count" and match["data"][0]["score"] > 0
    assert httpx.post(f"{base}/v1/skills/match", json={"query": "count words"}, headers=BOB,
                      timeout=60).json()["data"] == []

    # The quota filesystem unmounted (sandbox removed): listing mounts it again through the manager.
    workspace = skills_server.data_dir / "workspaces" / "alice"
    assert os.path.ismount(workspace)
    assert httpx.delete(f"{base}/v1/sandbox", headers=ALICE, timeout=120).status_code in (200, 204)
    assert not os.path.ismount(workspace) and not (workspace / ".openanalyst").exists()
    assert "word-count" in {s["name"] for s in skills(base, ALICE)["data"]}
    assert os.path.ismount(workspace)


def test_execute_runs_the_skill_script_in_the_sandbox(skills_server: Any, fake: FakeAnthropic) -> None:
    """`/v1/skills/execute` streams like /v1/chat: the model loads the skill with the `skill` tool, runs its
    script with bash in the tenant's sandbox, and both calls are in the audit log; `/run` answers JSON."""
    base = skills_server.base
    tool(base, "write_file", {"path": f"{SKILL_DIR}/SKILL.md", "content": WORD_COUNT}, ALICE)
    tool(base, "write_file", {"path": f"{SKILL_DIR}/scripts/count.sh", "content": SCRIPT}, ALICE)
    tool(base, "write_file", {"path": "notes.txt", "content": "one two three four\n"}, ALICE)
    command = f"sh /workspace/{SKILL_DIR}/scripts/count.sh notes.txt"
    fake.script([Reply.tool_call("skill", {"name": "word-count"}), Reply.tool_call("bash", {"command": command}),
                 Reply.text("notes.txt has 4 words.")])

    with httpx.stream("POST", f"{base}/v1/skills/execute", json={"query": "count the words of notes.txt"},
                      headers=ALICE, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["x-openanalyst-skills"] == "word-count"
        events = read_until_idle(response)
    results = {d["tool_name"]: d for k, d in ((k, d) for k, d, _ in events) if k == "tool_result"}
    assert "Run `sh /workspace/.openanalyst/skills/word-count/scripts/count.sh" in results["skill"]["output"]
    assert results["bash"]["output"] == "words: 4\n" and results["bash"]["exit_code"] == 0
    assert events[-1][:2] == ("state", {"state": "idle"})
    system = fake.requests[0].json()["system"]
    system_text = system if isinstance(system, str) else " ".join(b["text"] for b in system)
    assert '<skill name="word-count" source="tenant">' in system_text
    assert "skill" in {t["name"] for t in fake.requests[0].json()["tools"]}

    audit = httpx.get(f"{base}/v1/audit", params={"phase": "finished", "per_page": 100}, headers=ALICE).json()["data"]
    by_tool = {r["tool"]: r for r in audit}
    assert by_tool["skill"]["decision"] == "allowed"
    assert by_tool["bash"]["session_id"] == by_tool["skill"]["session_id"]
    started = httpx.get(f"{base}/v1/audit", params={"tool": "bash", "phase": "started"}, headers=ALICE).json()
    assert started["data"][0]["input"] == {"command": command}

    fake.script([Reply.text("Ready to count.")])
    run = httpx.post(f"{base}/v1/skills/word-count/run", json={"input": "count notes.txt", "stream": False},
                     headers=ALICE, timeout=120)
    assert run.status_code == 200, run.text
    assert run.json()["skills"] == ["word-count"] and run.json()["message"] == "Ready to count."
    assert fake.requests[-1].json()["messages"][0]["content"][0]["text"] == "count notes.txt"

    missing = httpx.post(f"{base}/v1/skills/word-count/run", json={}, headers=BOB, timeout=60)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "SKILL_NOT_FOUND"
    none = httpx.post(f"{base}/v1/skills/execute", json={"query": "zzzz qqqq"}, headers=ALICE, timeout=60)
    assert none.status_code == 404 and none.json()["error"]["code"] == "NO_SKILL_MATCHED"
    both = httpx.post(f"{base}/v1/skills/execute", json={"query": "x", "names": ["word-count"]}, headers=ALICE)
    assert both.status_code == 422 and both.json()["error"]["code"] == "VALIDATION_ERROR"


def test_server_skill_files_copied_into_the_sandbox(skills_server: Any, fake: FakeAnthropic) -> None:
    """A server skill's text files reach the tenant's sandbox through audited write_file calls — before a run
    of the skill, and when the model loads it with the `skill` tool (shown under that call) — and its script
    runs there with bash; binary files are named, not copied."""
    base = skills_server.base
    script = "/workspace/.openanalyst/server-skills/hello-report/scripts/hello.sh"
    fake.script([Reply.tool_call("bash", {"command": f"sh {script} Ada"}), Reply.text("Done.")])
    with httpx.stream("POST", f"{base}/v1/skills/hello-report/run", json={"input": "greet Ada"}, headers=BOB,
                      timeout=120) as response:
        assert response.status_code == 200
        events = read_until_idle(response)
    kinds = [(k, d.get("tool_name")) for k, d, _ in events if k in ("tool_call", "state")]
    assert kinds[:2] == [("tool_call", "write_file"), ("state", None)], kinds  # copied before the model runs
    copy = next(d for k, d, _ in events if k == "tool_call")
    assert copy["arguments"]["path"] == script and "parent_tool_call_id" not in copy
    bash = next(d for k, d, _ in events if k == "tool_result" and d["tool_name"] == "bash")
    assert bash["output"].startswith("hello, Ada (uid ") and bash["exit_code"] == 0
    system = fake.requests[0].json()["system"]
    system_text = system if isinstance(system, str) else " ".join(b["text"] for b in system)
    assert "were copied into the sandbox at /workspace/.openanalyst/server-skills/hello-report/: " \
           "scripts/hello.sh" in system_text
    assert "logo.bin: not UTF-8 text" in system_text

    fake.script([Reply.tool_call("skill", {"name": "hello-report"}), Reply.text("Loaded.")])
    with httpx.stream("POST", f"{base}/v1/chat", json={"message": "greet me"}, headers=BOB, timeout=120) as response:
        events = read_until_idle(response)
    calls = [d for k, d, _ in events if k == "tool_call"]
    skill_call = next(c for c in calls if c["tool_name"] == "skill")
    nested = next(c for c in calls if c["tool_name"] == "write_file")
    assert nested["parent_tool_call_id"] == skill_call["call_id"]
    loaded = next(d for k, d, _ in events if k == "tool_result" and d["tool_name"] == "skill")
    assert "Steps for hello-report." in loaded["output"] and "scripts/hello.sh" in loaded["output"]

    audit = httpx.get(f"{base}/v1/audit", params={"tool": "write_file", "phase": "finished"}, headers=BOB).json()
    assert [r["decision"] for r in audit["data"]] == ["allowed", "allowed"]
    assert httpx.get(f"{base}/v1/audit/verify", headers=BOB).json()["ok"] is True
