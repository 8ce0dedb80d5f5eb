"""Request and response models of the skills routes (the OpenAPI document is built from these)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.contract.common import Model
from server.contract.tools import ChatAnswer
from server.skills.model import Problem, Skill


class SkillInfo(Model):
    name: str
    description: str
    source: Literal["server", "tenant"] = Field(description="The server's skills directories, or the tenant's "
                                                            "own `.openanalyst/skills/` in its workspace.")
    path: str = Field(description="A tenant skill's directory in the sandbox; a server skill's directory name.")
    allowed_tools: list[str] | None = Field(description="The tools a run of the skill may call (with the "
                                                        "conversation tools; within the tenant's policy); null: "
                                                        "any the policy allows.")
    license: str | None = None
    compatibility: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    files: list[str] = Field(description="The skill's other files, relative to its directory.")

    @classmethod
    def of(cls, skill: Skill) -> SkillInfo:
        return cls(name=skill.name, description=skill.description, source=skill.source, path=skill.path,
                   allowed_tools=skill.allowed_tools, license=skill.license, compatibility=skill.compatibility,
                   metadata=skill.metadata, files=skill.files)


class SkillProblem(Model):
    """A skill that could not be used, and why; it hides no other skill."""

    name: str | None = Field(description="The skill's directory name (null: the problem is the source's).")
    source: Literal["server", "tenant"]
    path: str
    reason: str

    @classmethod
    def of(cls, problem: Problem) -> SkillProblem:
        return cls(name=problem.name, source=problem.source, path=problem.path, reason=problem.reason)


class SkillList(Model):
    data: list[SkillInfo]
    problems: list[SkillProblem]


class SkillMatch(SkillInfo):
    score: float = Field(gt=0, description="BM25 relevance (SQLite FTS5), higher is better; comparable only "
                                           "within one answer.")


class SkillMatches(Model):
    query: str
    data: list[SkillMatch]


class MatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=10_000)
    limit: int = Field(default=5, ge=1, le=50)


class RunOptions(BaseModel):
    """What a skill run shares with `/v1/chat`."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, max_length=200)
    effort: Literal["low", "medium", "high", "max"] | None = None
    system_prompt: str | None = Field(default=None, max_length=200_000,
                                      description="Added after the skills' instructions.")
    stream: bool = True


Message = Field(default=None, min_length=1, max_length=1_000_000,
                description="The user's message to the agent (default: the query, or a request to run the skills).")


class ExecuteByQuery(RunOptions):
    """Run the skills that best match ``query``."""

    query: str = Field(min_length=1, max_length=10_000)
    limit: int = Field(default=1, ge=1, le=10, description="How many of the best matches run.")
    message: str | None = Message


class ExecuteByNames(RunOptions):
    """Run these skills, by name."""

    names: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(min_length=1, max_length=10)
    message: str | None = Message


ExecuteBody = ExecuteByQuery | ExecuteByNames
"""Exactly one of ``query`` and ``names``: each variant forbids the other's fields, so the schema says it."""


class RunBody(RunOptions):
    input: str | None = Field(default=None, min_length=1, max_length=1_000_000,
                              description="What the skill should work on (the user's message).")


class SkillRunAnswer(ChatAnswer):
    """A skill run's answer with `"stream": false`: a chat answer plus the skills that ran."""

    skills: list[str]
