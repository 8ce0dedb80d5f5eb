#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the Python dependencies into .venv, builds the sandbox
# image (once; later runs reuse it by content hash) and runs every test against the real Docker engine.
# This is the command the README gives and the one CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! docker info >/dev/null 2>&1; then
    echo "FATAL: the Docker engine is not reachable (docker info failed)." >&2
    echo "The suite runs every tool call in real containers; start dockerd and try again." >&2
    exit 1
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/openanalyst sandbox build
.venv/bin/pytest "$@"
