#!/usr/bin/env bash
# Make sure a Docker engine answers before anything runs against it. On these machines the engine is started
# before the job; if it is not running but installed, start it (as CI runs as root) and wait for it. If it
# still does not answer, fail loudly: the suite never skips its container tests.
set -euo pipefail

if docker info >/dev/null 2>&1; then
    exit 0
fi
if command -v dockerd >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "Docker engine not reachable; starting dockerd (log: /var/log/dockerd-ci.log)" >&2
    (nohup dockerd >>/var/log/dockerd-ci.log 2>&1 &)
    for _ in $(seq 1 120); do
        if docker info >/dev/null 2>&1; then
            exit 0
        fi
        sleep 0.5
    done
fi
echo "FATAL: no Docker engine reachable; the suite cannot run without one." >&2
exit 1
