"""What the model reads when skills run: their instructions as the system prompt.

The chosen skills' instructions become the system prompt, each in its own ``<skill>`` element with its
directory, so the model can run the skill's scripts with the normal tools in the tenant's sandbox, where
every call is checked against the policy and audited; the user's message is the conversation.
"""

from __future__ import annotations

from collections.abc import Sequence

from server.skills.model import Skill

SERVER_SKILLS_DIR = "/workspace/.openanalyst/server-skills"
"""Where loading a server skill with the ``skill`` tool copies its files in the sandbox."""


def skill_block(skill: Skill, *, loading: bool = False) -> str:
    """One skill as the model reads it: where it is, what it needs, and its instructions (``loading``: the
    skill tool is loading it now, and says itself where a server skill's files went)."""
    if skill.source == "tenant":
        where = f"Its files are in the sandbox at {skill.path}/ (run its scripts from there with the bash tool)."
    elif skill.files and not loading:
        where = (f"It is one of the server's skills: load it with the skill tool (name {skill.name!r}) to copy its "
                 f"files into the sandbox at {SERVER_SKILLS_DIR}/{skill.name}/.")
    else:
        where = "It is one of the server's skills."
    lines = [f'<skill name="{skill.name}" source="{skill.source}">', f"Description: {skill.description}", where]
    if skill.files:
        lines.append("Files: " + ", ".join(skill.files))
    if skill.allowed_tools:
        lines.append("Tools it uses: " + ", ".join(skill.allowed_tools))
    lines += ["", skill.instructions, "</skill>"]
    return "\n".join(lines)


def system_prompt(skills: Sequence[Skill], extra: str | None, copies: Sequence[str] = ()) -> str:
    """The run's system prompt; ``copies``: reports of server skills' files already copied into the sandbox."""
    head = ("You are running the following skill" + ("s" if len(skills) > 1 else "") + " for the user. Follow "
            "the instructions of each skill to do what the user asks.")
    parts = [head, *(skill_block(s, loading=bool(copies)) for s in skills), *copies]
    if extra:
        parts.append(extra)
    return "\n\n".join(parts)


def default_message(skills: Sequence[Skill]) -> str:
    return "Run the skill " + ", ".join(s.name for s in skills) + "."
