#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the Python dependencies into .venv, builds the sandbox
# image (once; later runs reuse it by content hash) and runs every test against the real Docker engine.
# This is the command the README gives and the one CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-docker.sh

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/openanalyst sandbox build
.venv/bin/pytest "$@"
