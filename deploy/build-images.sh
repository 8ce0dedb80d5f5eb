#!/usr/bin/env bash
# Build the images deploy/compose.yaml runs, on this engine, each only when its tag is missing; the tags are
# content hashes, so a re-run with unchanged sources builds nothing. Prints them as KEY=VALUE lines for
# docker-compose's environment (or an .env file next to compose.yaml).
#
#   deploy/build-images.sh            (env: PYTHON, the interpreter with the project's dependencies)
#
#   OPENANALYST_SANDBOX_IMAGE  openanalyst/sandbox:<hash>       `python -m toolrunner.image` (the server only
#                                                               checks it exists: the proxy refuses builds)
#   OPENANALYST_SERVER_IMAGE   openanalyst/server:<hash>        sandbox_images/build-server-image.sh
#   OPENANALYST_PROXY_IMAGE    openanalyst/socket-proxy:<hash>  deploy/socket-proxy/Dockerfile
#
# No registry needed: where debian:bookworm-slim (for the proxy) or python:3.11-slim-bookworm (for the server)
# is not on the engine, each is built FROM a local debootstrap base (sandbox_images/build-base.sh; root and
# debootstrap, which .ci/install-system.sh installs). Progress goes to stderr, the tags to stdout.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
proxy_dir="$repo/deploy/socket-proxy"

hash_files() {  # a short hash of the named files' paths and contents
    (cd "$repo" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z \
        | xargs -0 sha256sum) | sha256sum | cut -c1-12
}

# The sandbox image: the same tag the server computes from its own copy of these sources.
sandbox=$(cd "$repo" && "$python" -m toolrunner.image --print-tag)
if ! docker image inspect "$sandbox" >/dev/null 2>&1; then
    (cd "$repo" && "$python" -m toolrunner.image) >&2
fi

# The server: everything its wheel is built from.
server="openanalyst/server:$(hash_files pyproject.toml README.md Dockerfile server toolrunner policies sandbox_images)"
if ! docker image inspect "$server" >/dev/null 2>&1; then
    PYTHON="$python" bash "$repo/sandbox_images/build-server-image.sh" "$server" >&2
fi

# The socket proxy: Debian's HAProxy and our allow-list.
base=${PROXY_BASE_IMAGE:-}
if [ -z "$base" ] && docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
    base=debian:bookworm-slim
fi
if [ -z "$base" ]; then
    base="openanalyst/socket-proxy-base:$(cat "$proxy_dir/packages.txt" "$repo/sandbox_images/build-base.sh" \
        | sha256sum | cut -c1-12)"
    if ! docker image inspect "$base" >/dev/null 2>&1; then
        work=$(mktemp -d /var/tmp/openanalyst-proxy-base.XXXXXX)
        trap 'rm -rf "$work"' EXIT
        mirror=$(cd "$repo" && "$python" -c 'from toolrunner.image import debian_mirror; print(debian_mirror())')
        bash "$repo/sandbox_images/build-base.sh" "$work/rootfs.tar" "$mirror" bookworm \
            "$proxy_dir/packages.txt" >&2
        docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["/bin/sh"]' "$work/rootfs.tar" "$base" >&2
        rm -f "$work/rootfs.tar"
    fi
fi
proxy="openanalyst/socket-proxy:$( (echo "$base"; cat "$proxy_dir/Dockerfile" "$proxy_dir/haproxy.cfg" \
    "$proxy_dir/entrypoint.sh") | sha256sum | cut -c1-12)"
if ! docker image inspect "$proxy" >/dev/null 2>&1; then
    docker build --build-arg BASE_IMAGE="$base" --label openanalyst.socket_proxy=1 -t "$proxy" "$proxy_dir" >&2
fi

# Older content-hash tags of ours would pile up with every source change: drop those no container uses
# (an image a container still runs is refused by the engine without -f, and kept).
prune_older() {  # REPO CURRENT_TAG
    local old
    for old in $(docker images "$1" --format '{{.Tag}}'); do
        [[ "$old" =~ ^[0-9a-f]{12}$ && "$old" != "$2" ]] || continue
        if docker image rm "$1:$old" >/dev/null 2>&1; then
            echo "build-images: removed unused $1:$old" >&2
        fi
    done
}
prune_older openanalyst/server "${server#*:}"
prune_older openanalyst/socket-proxy "${proxy#*:}"

echo "OPENANALYST_SANDBOX_IMAGE=$sandbox"
echo "OPENANALYST_SERVER_IMAGE=$server"
echo "OPENANALYST_PROXY_IMAGE=$proxy"
