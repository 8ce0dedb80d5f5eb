"""Tenants' environments on the server side: storage, background builds, the image a call runs in."""

from server.environments.builds import Build, Builds
from server.environments.service import EnvironmentService, EnvironmentView
from server.environments.store import EnvironmentRecord, EnvironmentStore

__all__ = ["Build", "Builds", "EnvironmentRecord", "EnvironmentService", "EnvironmentStore", "EnvironmentView"]
