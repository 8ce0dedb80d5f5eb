"""Input models of the sandbox tools: one pydantic model per tool, unknown fields forbidden.

The JSON schema the model sees (and `GET /v1/tools` lists) is generated from these models, so the schema and
the validation can never disagree. The runner validates again inside the container: the host's check gives
the client a clear 422 early, the runner's keeps the sandbox safe from a host bug.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ToolInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Timeout = Field(default=None, gt=0, le=3600, description="Seconds before the call is stopped (capped by policy).")


class BashInput(ToolInput):
    command: str = Field(min_length=1, max_length=100_000, description="Shell command run by bash.")
    timeout_s: float | None = Timeout
    run_in_background: bool = Field(
        default=False, description="Start it and answer at once with a process id for bash_output/kill_process.")


class ProcessInput(ToolInput):
    id: str = Field(min_length=1, max_length=64, description="Process id returned by a background bash call.")


class CodeInput(ToolInput):
    code: str = Field(min_length=1, max_length=1_000_000)
    timeout_s: float | None = Timeout


class ReplInput(ToolInput):
    code: str = Field(max_length=1_000_000, description="Python source; the value of a trailing expression is shown.")
    timeout_s: float | None = Timeout
    restart: bool = Field(default=False, description="Start a fresh interpreter first.")


class PowershellInput(ToolInput):
    command: str = Field(min_length=1, max_length=100_000)
    timeout_s: float | None = Timeout


Path = Field(min_length=1, max_length=4096, description="Path relative to /workspace, or absolute inside it.")


class ReadFileInput(ToolInput):
    path: str = Path
    offset: int | None = Field(default=None, ge=0, description="First line to show (0-based).")
    limit: int | None = Field(default=None, ge=1, le=100_000, description="How many lines to show.")


class WriteFileInput(ToolInput):
    path: str = Path
    # One protocol frame carries at most 8 MiB of JSON: 4M characters stay inside it even escaped.
    content: str = Field(max_length=4_000_000)


class EditFileInput(ToolInput):
    path: str = Path
    old_string: str = Field(min_length=1)
    new_string: str
    replace_all: bool = False


class GrepInput(ToolInput):
    pattern: str = Field(min_length=1, max_length=10_000, description="Regular expression (ripgrep syntax).")
    path: str | None = Field(default=None, max_length=4096)
    glob: str | None = Field(default=None, max_length=1000)
    output_mode: Literal["content", "files_with_matches", "count"] = "files_with_matches"
    case_insensitive: bool = False


class GlobInput(ToolInput):
    pattern: str = Field(min_length=1, max_length=1000)
    path: str | None = Field(default=None, max_length=4096)


class NotebookEditInput(ToolInput):
    path: str = Path
    cell_index: int = Field(ge=0)
    new_source: str = ""
    edit_mode: Literal["replace", "insert", "delete"] = "replace"
    cell_type: Literal["code", "markdown"] | None = None


SANDBOX_TOOLS: dict[str, tuple[type[ToolInput], str]] = {
    "bash": (BashInput, "Run a bash command in the session's shell; cwd and exported variables persist."),
    "bash_output": (ProcessInput, "Read new output of a background process started by bash."),
    "kill_process": (ProcessInput, "Stop a background process started by bash."),
    "python": (CodeInput, "Run Python code once in a fresh interpreter."),
    "javascript": (CodeInput, "Run JavaScript code once with node."),
    "repl": (ReplInput, "Run Python in the session's persistent interpreter; names survive between calls."),
    "powershell": (PowershellInput, "Run a PowerShell command with pwsh, where the sandbox image has it."),
    "read_file": (ReadFileInput, "Read a text file of the workspace as numbered lines."),
    "write_file": (WriteFileInput, "Write a file in the workspace, creating parent directories."),
    "edit_file": (EditFileInput, "Replace an exact string in a workspace file."),
    "grep_search": (GrepInput, "Search file contents of the workspace with a regular expression."),
    "glob_search": (GlobInput, "Find workspace files by glob pattern, newest first."),
    "notebook_edit": (NotebookEditInput, "Replace, insert or delete a cell of a Jupyter notebook."),
}


@functools.cache
def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema a provider receives: no titles, which only cost tokens. Cached: building it costs
    milliseconds, and every model turn sends every tool's schema (treat the result as read-only)."""
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema
