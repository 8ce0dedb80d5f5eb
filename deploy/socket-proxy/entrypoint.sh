#!/bin/sh
# Refuse to start with an unusable OPENANALYST_HOST_DIR (the only bind-mount source the proxy lets a created
# container have): it must be an absolute path of plain characters, since haproxy.cfg puts it in a regex.
set -eu
dir=${OPENANALYST_HOST_DIR:-}
case "$dir" in
    /*) ;;
    *) echo "socket-proxy: OPENANALYST_HOST_DIR must be an absolute path, got '$dir'" >&2; exit 2 ;;
esac
if printf '%s' "$dir" | grep -q '[^A-Za-z0-9/_-]' || printf '%s' "$dir" | grep -q '//'; then
    echo "socket-proxy: OPENANALYST_HOST_DIR may hold only A-Z a-z 0-9 / _ - (got '$dir')" >&2
    exit 2
fi
[ "$dir" != "/" ] || { echo "socket-proxy: OPENANALYST_HOST_DIR must not be /" >&2; exit 2; }
export OPENANALYST_HOST_DIR="${dir%/}"
haproxy -c -q -f /etc/haproxy/haproxy.cfg
exec haproxy -W -db -f /etc/haproxy/haproxy.cfg
