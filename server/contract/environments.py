"""Request and response models of ``/v1/environments`` (docs/environments.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from server.contract.common import Model
from toolrunner.envbuild.spec import DEBIAN_RE, MAX_FRAGMENT, MAX_PACKAGES, NAME_RE, NPM_RE, PYTHON_RE

DebianSpec = Annotated[str, Field(pattern=f"^{DEBIAN_RE.pattern}$")]
PythonSpec = Annotated[str, Field(pattern=f"^{PYTHON_RE.pattern}$")]
NpmSpec = Annotated[str, Field(pattern=f"^{NPM_RE.pattern}$")]
NamePath = Annotated[str, Path(min_length=1, max_length=40, pattern=f"^{NAME_RE.pattern}$",
                               description="The environment's name.")]


class EnvironmentBody(BaseModel):
    """A new environment: packages to add to the sandbox image and an optional Dockerfile fragment."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=40, pattern=f"^{NAME_RE.pattern}$",
                      description="Lower-case letters, digits and `-`, a letter first; `default` is reserved "
                                  "(409 ENVIRONMENT_NAME_RESERVED).")
    debian: list[DebianSpec] = Field(default_factory=list, max_length=MAX_PACKAGES,
                              description="Debian packages, `name` or `name=version`.")
    python: list[PythonSpec] = Field(default_factory=list, max_length=MAX_PACKAGES,
                              description="Python requirements, a name with optional extras and version specifiers "
                                          "(wheels only).")
    npm: list[NpmSpec] = Field(default_factory=list, max_length=MAX_PACKAGES,
                           description="npm packages, `[@scope/]name[@range]` (install scripts never run).")
    dockerfile: str = Field(default="", max_length=MAX_FRAGMENT,
                            description="Instructions after the packages: RUN, ENV and LABEL only, run as root "
                                        "without network; a fragment breaking a rule is refused 422 "
                                        "ENVIRONMENT_INVALID, its message naming the Dockerfile fragment.")


class DefaultBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    environment: str | None = Field(description="The tenant's default environment, or null for the sandbox image.")


class DefaultEnvironment(Model):
    environment: str | None


class Environment(Model):
    name: str
    debian: list[str]
    python: list[str]
    npm: list[str]
    dockerfile: str
    state: Literal["building", "ready", "failed"] = Field(
        description="The build on the current sandbox image; `ready` at once for an empty definition.")
    image: str | None = Field(description="The image tag, `openanalyst/env:<hash16>`, once ready.")
    hash: str | None = Field(description="sha256 of the normalised definition and the base image id.")
    error: str | None = Field(description="The build's own error text (bounded) when it failed.")
    error_code: str | None
    default: bool = Field(description="Whether this is the tenant's default environment.")
    created_at: str


class EnvironmentList(Model):
    data: list[Environment]
