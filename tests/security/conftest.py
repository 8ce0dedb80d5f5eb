"""Fixtures for the tests against the real engine; shared with the other sandbox suite from
tests/sandbox_support.py (tests/ is on sys.path)."""

from sandbox_support import harness, harness_factory

__all__ = ["harness", "harness_factory"]
