#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the system packages it needs when they are missing
# (debootstrap for the sandbox base where no registry is reachable, chromium for the viewer tests, haproxy and
# docker-compose for the deployment test, postgresql for the store tests: .ci/install-system.sh, a few
# `command -v` checks when all is present), the Python dependencies into .venv, builds the sandbox image (once; later runs reuse it by content
# hash) and runs every test against the real Docker engine. This is the command the README gives and the one
# CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash .ci/install-system.sh  # first: it installs docker.io itself on a machine that lacks it
bash scripts/ensure-docker.sh

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/pip install -q --disable-pip-version-check -e client/  # the Python client, tested against the server
.venv/bin/openanalyst sandbox build
.venv/bin/pytest "$@"
# The whole run also puts the API tests' apps on PostgreSQL (a fresh database each on a throwaway cluster,
# tests/pg_support.py): about 70 s more. The store-level tests ran on both backends above already.
if [ "$#" -eq 0 ]; then
    OPENANALYST_TEST_DATABASE=postgresql .venv/bin/pytest tests/api
fi
