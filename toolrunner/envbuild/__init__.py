"""Environments: tenant-defined images on top of the sandbox image, built offline (docs/environments.md)."""

from toolrunner.envbuild.build import Built, EnvironmentBuilder, Sources, env_tag
from toolrunner.envbuild.errors import EnvironmentBuildFailed, EnvironmentHardeningLost, EnvironmentInvalid
from toolrunner.envbuild.spec import Definition, definition, validate_name

__all__ = ["Built", "Definition", "EnvironmentBuildFailed", "EnvironmentBuilder", "EnvironmentHardeningLost",
           "EnvironmentInvalid", "Sources", "definition", "env_tag", "validate_name"]
