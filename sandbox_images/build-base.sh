#!/usr/bin/env bash
# Make the sandbox base root filesystem locally, for machines that cannot pull from a container registry.
#
#   build-base.sh OUT.tar [MIRROR] [SUITE] [PACKAGES_FILE]
#
# Runs `debootstrap --variant=minbase` with the packages in PACKAGES_FILE (default: packages.txt next to this
# script; build-server-image.sh passes server-packages.txt) and writes the result as a tar
# stream that `docker import` turns into an image (toolrunner/image.py does the import and tags it
# openanalyst/sandbox-base:<hash>). Needs root and debootstrap (.ci/install-system.sh installs it).
# The tree is trimmed (apt lists, caches, docs, man pages, locales) so that the image stays small.
set -euo pipefail

out=${1:?usage: build-base.sh OUT.tar [MIRROR] [SUITE] [PACKAGES_FILE]}
mirror=${2:-http://deb.debian.org/debian}
suite=${3:-bookworm}
here=$(cd "$(dirname "$0")" && pwd)
packages_file=${4:-$here/packages.txt}

if [ "$(id -u)" -ne 0 ]; then
    echo "build-base: debootstrap needs root" >&2
    exit 2
fi
command -v debootstrap >/dev/null 2>&1 || { echo "build-base: debootstrap is not installed" >&2; exit 3; }

pkgs=$(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$packages_file" | grep -v '^$' | paste -sd, -)
work=$(mktemp -d /var/tmp/openanalyst-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
root="$work/root"

echo "build-base: debootstrap $suite from $mirror with $pkgs"
debootstrap --variant=minbase --include="$pkgs" "$suite" "$root" "$mirror"

# Later apt installs in the image skip docs too.
mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
cat > "$root/etc/dpkg/dpkg.cfg.d/01-openanalyst-nodoc" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG

echo "build-base: trimming"
find "$root/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root/usr/share/man/"* "$root/usr/share/info/"* "$root/usr/share/locale/"* \
    "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"* "$root/var/cache/debconf/"*-old \
    "$root/var/log/"* "$root/tmp/"* "$root/var/tmp/"* "$root/root/.cache"
: > "$root/etc/resolv.conf"
: > "$root/etc/hostname"

echo "build-base: writing $out"
tar -C "$root" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -cf "$out" .
echo "build-base: done ($(du -sh "$out" | cut -f1))"
