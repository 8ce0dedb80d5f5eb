#!/usr/bin/env bash
# System packages CI needs, installed only when missing so that re-runs are fast and offline-safe.
# debootstrap makes the sandbox base image locally where no container registry is reachable.
set -euo pipefail

need=()
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
command -v docker >/dev/null 2>&1 || need+=(docker.io)
# The runner's unit tests run it on the host: rg is its fast grep path, node runs javascript; the spec's
# curl examples run with real curl.
command -v rg >/dev/null 2>&1 || need+=(ripgrep)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v curl >/dev/null 2>&1 || need+=(curl)
# The audit viewer's browser tests drive Debian's chromium through Playwright (no browser download); the
# compose deployment builds its Docker socket proxy from the host's haproxy package (no registry); the
# compose end-to-end test runs Debian's docker-compose (v1).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
# The multi-engine tests reach an engine over SSH through a test sshd of their own on 127.0.0.1 (the package's
# own service is not started where there is no init system, and the tests never use it).
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
# Environments are built from packages the host downloads: Debian's with apt (so its package lists must be
# there), npm tarballs with the host's npm (the tests pack and serve one of their own).
command -v npm >/dev/null 2>&1 || need+=(npm)
# The store tests run against a real PostgreSQL server: a throwaway cluster per run, made with the package's
# initdb and pg_ctl (tests/pg_support.py); the package's own service is never used.
compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || need+=(postgresql)
lists_missing=0
compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null || lists_missing=1

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
if [ "${#need[@]}" -eq 0 ]; then
    if [ "$lists_missing" -eq 1 ]; then
        echo "install-system: fetching Debian's package lists (environments download packages from them)"
        $SUDO apt-get update -qq
    fi
    echo "install-system: nothing to install"
    exit 0
fi

echo "install-system: installing ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
