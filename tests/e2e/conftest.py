"""Fixtures for the end-to-end tests; the helpers live in server_process.py so tests import them by a unique
name (two directories' `conftest` modules would shadow each other on sys.path)."""

from server_process import account, fake, openanalyst_cmd, serve

__all__ = ["account", "fake", "openanalyst_cmd", "serve"]
