#!/usr/bin/env bash
# Build the server's own image (root Dockerfile) without a container registry and without network in the build.
#
#   sandbox_images/build-server-image.sh [TAG]        (default openanalyst/server:latest; env BASE_IMAGE, PYTHON)
#
# The base is python:3.11-slim-bookworm if the engine has it, else a local debootstrap base with python3-venv
# (server-packages.txt), imported once as openanalyst/server-base:<hash>. The project and its dependencies
# are built into a wheelhouse on the host (whose pip reaches PyPI) and installed with --no-index in the build.
# The context is a temp dir holding only the Dockerfile and the wheelhouse.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-openanalyst/server:latest}
python=${PYTHON:-$repo/.venv/bin/python}
images="$repo/sandbox_images"
work=$(mktemp -d /var/tmp/openanalyst-server-image.XXXXXX)
trap 'rm -rf "$work"' EXIT

base=${BASE_IMAGE:-}
if [ -z "$base" ] && docker image inspect python:3.11-slim-bookworm >/dev/null 2>&1; then
    base=python:3.11-slim-bookworm
fi
if [ -z "$base" ]; then
    hash=$(cat "$images/server-packages.txt" "$images/build-base.sh" | sha256sum | cut -c1-12)
    base="openanalyst/server-base:$hash"
    if ! docker image inspect "$base" >/dev/null 2>&1; then
        mirror=$(cd "$repo" && "$python" -c 'from toolrunner.image import debian_mirror; print(debian_mirror())')
        bash "$images/build-base.sh" "$work/rootfs.tar" "$mirror" bookworm "$images/server-packages.txt"
        docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
            "$work/rootfs.tar" "$base"
        rm -f "$work/rootfs.tar"
    fi
fi
echo "build-server-image: base $base"

# The project is copied first so that building its wheel leaves nothing (build/, *.egg-info) in the checkout.
mkdir -p "$work/src" "$work/ctx/wheelhouse"
tar -C "$repo" --exclude='__pycache__' --exclude='*.pyc' \
    -cf - pyproject.toml README.md server toolrunner policies sandbox_images | tar -C "$work/src" -xf -
"$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$work/ctx/wheelhouse" "$work/src"
cp "$repo/Dockerfile" "$work/ctx/Dockerfile"
echo "build-server-image: $(ls "$work/ctx/wheelhouse" | wc -l) wheels"

docker build --build-arg BASE_IMAGE="$base" --label openanalyst.server_image=1 -t "$tag" "$work/ctx"
echo "build-server-image: built $tag"
