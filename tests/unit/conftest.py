"""Fixtures for the unit tests; the helpers live in runner_support.py so tests import them by a unique name
(two directories' `conftest` modules would shadow each other on sys.path)."""

from runner_support import anyio_backend, runner

__all__ = ["anyio_backend", "runner"]
