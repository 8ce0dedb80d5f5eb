"""Entry point: ``python3 -I -m toolrunner.runner [--workspace DIR]``.

stdin and stdout carry protocol frames only: they are moved to private fds at once, fd 0 becomes /dev/null
and fd 1 a copy of stderr, so nothing a library prints can corrupt the stream and no child inherits it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from toolrunner.runner.procs import REGISTRY, log
from toolrunner.runner.server import Server
from toolrunner.runner.state import Runtime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="toolrunner.runner", description=__doc__)
    parser.add_argument("--workspace", default="/workspace", help="root of the files the tools may touch")
    args = parser.parse_args(argv)
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
    server = Server(Runtime.create(args.workspace), in_fd, out_fd)
    try:
        return server.serve()
    finally:
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
