"""Entry point: ``python3 -I -m toolrunner.runner [--workspace DIR] [--isolation uid|shared|none]``.

Started as root in the container (with only CAP_SETUID, CAP_SETGID and CAP_KILL), it drops to its own uid
before reading a single frame; ``--isolation none`` (the default: a runner on a host, for tests and
development) keeps the caller's identity and isolates nothing. See docs/runner-trust.md.

stdin and stdout carry protocol frames only: they are moved to private fds at once, fd 0 becomes /dev/null
and fd 1 a copy of stderr, so nothing a library prints can corrupt the stream and no child inherits it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from toolrunner.runner import guard
from toolrunner.runner.egress_env import LISTEN, SOCKET
from toolrunner.runner.identity import MODES, UMASK, Identities, IdentityError, drop_to_runner, set_tool_guard
from toolrunner.runner.procs import REGISTRY, log
from toolrunner.runner.resident import lock_code
from toolrunner.runner.server import Server
from toolrunner.runner.state import Runtime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="toolrunner.runner", description=__doc__)
    parser.add_argument("--workspace", default="/workspace", help="root of the files the tools may touch")
    parser.add_argument("--isolation", choices=MODES, default="none", help="how sessions' processes are run")
    parser.add_argument("--tool-gid", type=int, default=None, help="group of tool processes (workspace group)")
    parser.add_argument("--shared-uid", type=int, default=None, help="uid of all sessions in mode 'shared'")
    args = parser.parse_args(argv)
    if args.isolation != "none":
        if os.getuid() != 0:
            log(f"--isolation {args.isolation} needs the runner to start as root (with CAP_SETUID/SETGID/KILL)")
            return 2
        ws = os.stat(args.workspace)
        gid = args.tool_gid if args.tool_gid is not None else ws.st_gid
        try:
            drop_to_runner(gid)
        except (IdentityError, OSError) as exc:
            log(f"cannot take the runner's identity: {exc}")
            return 2
        REGISTRY.identities = Identities(args.isolation, gid, args.shared_uid)
        try:
            set_tool_guard(guard.build())
        except (guard.GuardError, OSError) as exc:  # the hello says so, and the host refuses the container
            log(f"tool processes could lower their oom_score_adj: {exc}")
        os.umask(UMASK)
    if not os.path.isdir(args.workspace):
        log(f"workspace {args.workspace!r} is not a directory")
        return 2
    in_fd, out_fd = os.dup(0), os.dup(1)
    for fd in (in_fd, out_fd):
        os.set_inheritable(fd, False)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if not REGISTRY.become_subreaper():
        log("could not become a child subreaper; leftover processes may escape to PID 1")
    REGISTRY.start_reaper()
    egress = "none"  # what the hello reports: the host refuses an allowlist container whose forwarder is not up
    if os.path.exists(SOCKET):  # allowlist: serve the host's egress proxy on this container's loopback
        from toolrunner.runner.egress_forward import start_if_mounted

        egress = "listening" if start_if_mounted() is not None else "failed"
        if egress == "failed":
            log(f"egress: cannot serve {SOCKET} on {LISTEN}; tools get no network")
    server = Server(Runtime.create(args.workspace), in_fd, out_fd, egress=egress)
    if args.isolation != "none":  # a container's runner: its code stays resident under memory pressure
        try:
            lock_code()
        except OSError as exc:
            log(f"could not lock the runner's code in memory: {exc}")
    try:
        return server.serve()
    finally:
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
