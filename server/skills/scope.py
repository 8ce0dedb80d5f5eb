"""The tools a skill run may use: the union of its skills' ``allowed-tools``, in our tool names.

A skill that declares no ``allowed-tools`` did not restrict itself, so a run that includes one is not scoped
(the tenant's policy still applies). Claude-Code names are mapped to ours (``Read`` → ``read_file``); an entry
with a command pattern, ``Bash(git:*)``, allows the whole tool — the pattern is not enforced, the sandbox and
the policy bound what ``bash`` can do. Names that match no tool allow nothing.

The tools that act on nothing but the conversation (``CONVERSATION_TOOLS``: loading a skill, the task list,
a message to the user, the structured answer, finding a tool, reading settings, waiting) stay allowed in a
scoped run, as Claude Code never asks permission for them; every tool that touches the sandbox, the network or
starts a sub-agent must be listed.
"""

from __future__ import annotations

from collections.abc import Sequence

from server.skills.model import Skill

CLAUDE_CODE_NAMES = {
    "bash": "bash", "bashoutput": "bash_output", "killshell": "kill_process", "killbash": "kill_process",
    "read": "read_file", "write": "write_file", "edit": "edit_file", "multiedit": "edit_file",
    "grep": "grep_search", "glob": "glob_search", "notebookedit": "notebook_edit", "webfetch": "web_fetch",
    "websearch": "web_search", "todowrite": "todo_write", "task": "agent", "agent": "agent", "skill": "skill",
    "powershell": "powershell", "repl": "repl", "toolsearch": "tool_search", "config": "config",
    "sleep": "sleep", "sendusermessage": "send_user_message", "structuredoutput": "structured_output",
}

CONVERSATION_TOOLS = frozenset({"skill", "todo_write", "send_user_message", "structured_output", "tool_search",
                                "config", "sleep"})


def tool_name(entry: str) -> str:
    """Our name for one ``allowed-tools`` entry: its part before ``(``, ours as is, Claude Code's mapped."""
    base = entry.split("(", 1)[0].strip()
    return CLAUDE_CODE_NAMES.get(base.lower().replace("_", ""), base) if base[:1].isupper() else base


def tool_scope(skills: Sequence[Skill]) -> frozenset[str] | None:
    """The tools a run of ``skills`` may call, or None when one of them declares no list (unscoped)."""
    if not skills or any(s.allowed_tools is None for s in skills):
        return None
    names = {tool_name(entry) for s in skills for entry in s.allowed_tools or ()} | CONVERSATION_TOOLS
    return frozenset(names)
