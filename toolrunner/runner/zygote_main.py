"""The python tool's forking interpreter: a program the runner starts as a session (``python3 -u -s -c``).

It never runs session code itself. It imports what a fresh ``python3 file.py`` has, makes itself
non-dumpable (no process may trace it, read its memory or open its ``/proc`` fds, not even its own
session's), ignores every catchable signal, and then, per request on its stdin (a socket only the runner
holds: a working directory, a code file, an environment and three fds for stdin, stdout and stderr),
forks twice: the middle process reports the pid of the last one and exits, so the call's process is
re-parented to the runner (the child subreaper), whose own ``waitpid`` gives its exit status. The call's
process resets what a fresh interpreter would not have (signal dispositions, environment, modules imported
here, ``__main__``, ``sys.argv``, ``sys.path[0]``, user site-packages), becomes dumpable again and runs
the file as ``__main__``.

Before each fork it checks what another process of its uid could have changed from outside (resource
limits, nice value, CPU affinity, scheduling policy); if anything differs it answers ``tainted`` and exits,
and the runner starts a new one. Standard library only; it must not import the runner's package.
"""

import sys

_BASE = frozenset(sys.modules)  # what a fresh interpreter has: the call's process drops everything else
if sys.path and sys.path[0] == "":
    del sys.path[0]  # never import from the working directory into the interpreter every call is forked from

import _socket  # noqa: E402 - imported after _BASE on purpose (also below)
import contextlib  # noqa: E402
import ctypes  # noqa: E402
import gc  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import signal as _signal  # noqa: E402

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import CodeType
    from typing import Any

    Job = tuple[CodeType, dict[str, Any]]

_PR_SET_DUMPABLE = 4
_LIBC = ctypes.CDLL(None, use_errno=True)
_KEEP = (_signal.SIGCHLD, _signal.SIGKILL, _signal.SIGSTOP)


def _facts() -> tuple[object, ...]:
    """What another process of this uid may change about this one, and children inherit."""
    limits = tuple(resource.getrlimit(getattr(resource, n)) for n in dir(resource) if n.startswith("RLIMIT_"))
    return (limits, os.getpriority(os.PRIO_PROCESS, 0), frozenset(os.sched_getaffinity(0)),
            os.sched_getscheduler(0))


def _fresh_signals() -> None:
    """The dispositions a fresh interpreter has: default, but SIGPIPE and SIGXFSZ ignored, SIGINT raising."""
    for sig in range(1, _signal.NSIG):
        if sig in _KEEP:
            continue
        with contextlib.suppress(OSError, ValueError):
            _signal.signal(sig, _signal.SIG_DFL)
    for sig in (_signal.SIGPIPE, _signal.SIGXFSZ):
        _signal.signal(sig, _signal.SIG_IGN)
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)


def _become_call(fds: list[int], cwd: str, path: str, env: str) -> "Job":
    """In the call's process, before any session code: its own session, its fds, a fresh interpreter."""
    os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    os.closerange(3, 1 << 16)
    _LIBC.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
    _fresh_signals()
    os.chdir(cwd)
    os.environ.clear()
    for line in env.split("\n") if env else ():
        name, _, value = line.partition("=")
        os.environ[name] = value
    for name in set(sys.modules) - _BASE:
        del sys.modules[name]
    sys.path_importer_cache.clear()
    sys.argv[:] = [path]
    sys.orig_argv[:] = [sys.executable, "-u", path]
    sys.path.insert(0, os.path.dirname(path))
    site = sys.modules.get("site")
    if site is not None:
        user = site.getusersitepackages()
        setattr(site, "ENABLE_USER_SITE", True)  # noqa: B010 - the module is the interpreter's, untyped here
        if os.path.isdir(user):
            site.addsitedir(user)
    main = type(sys)("__main__")
    loader = sys.modules["_frozen_importlib_external"].SourceFileLoader("__main__", path)
    vars(main).update(__annotations__={}, __file__=path, __cached__=None, __loader__=loader,
                      __builtins__=sys.modules["builtins"])
    sys.modules["__main__"] = main
    with open(path, "rb") as f:
        source = f.read()
    return compile(source, path, "exec"), main.__dict__


def _fork_call(sock: _socket.socket, fds: list[int], call: list[str]) -> "Job | None":
    """Fork the call's process (through a middle process that exits) and answer its pid; None in the parent,
    the call to run in the call's process."""
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.close(r)
        pid = os.fork()
        if pid == 0:
            os.close(w)
            sock.detach()  # fd 0 is the call's stdin from here on: the socket object must not close it
            return _become_call(fds, *call)
        os.write(w, str(pid).encode())
        os._exit(0)
    os.close(w)
    reply = b""
    while True:
        chunk = os.read(r, 64)
        if not chunk:
            break
        reply += chunk
    os.close(r)
    os.waitpid(middle, 0)  # the middle is gone: the call's process is the runner's child from here on
    sock.sendall((reply or b"failed") + b"\n")
    return None


def _serve() -> "Job":
    """Answer fork requests until the runner closes the socket; returns only in a call's process."""
    _LIBC.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    for sig in range(1, _signal.NSIG):
        if sig in _KEEP:
            continue
        with contextlib.suppress(OSError, ValueError):
            _signal.signal(sig, _signal.SIG_IGN)
    sock = _socket.socket(fileno=0)
    facts = _facts()
    gc.freeze()  # the collector then never walks (and so never copies) the pages the calls share with us
    sock.sendall(b"ready\n")
    space = _socket.CMSG_SPACE(3 * 4)
    while True:
        data, anc, _, _ = sock.recvmsg(1 << 16, space)
        if not data:
            os._exit(0)
        fds: list[int] = []
        for level, kind, raw in anc:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds += [int.from_bytes(raw[i : i + 4], sys.byteorder) for i in range(0, len(raw) - len(raw) % 4, 4)]
        parts = data.split(b"\0")
        if len(fds) != 3 or len(parts) != 4 or _facts() != facts:
            sock.sendall(b"tainted\n")
            os._exit(3)
        job = _fork_call(sock, fds, [os.fsdecode(p) for p in parts[:3]])
        if job is not None:
            return job
        for fd in fds:
            os.close(fd)


def _exit_code(exc: SystemExit) -> int:
    """What the interpreter makes of an uncaught SystemExit (its message goes to stderr)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    with contextlib.suppress(Exception):
        print(exc.code, file=sys.stderr)
    return 1


def _run(job: "Job") -> None:
    """Run the call's program as the interpreter runs a file, then end the way it does for what the program
    made: non-daemon threads joined, atexit handlers run, its objects released (files flushed and closed),
    streams flushed. The teardown of the interpreter state forked from the zygote is skipped: it would write
    to, and so copy, every page shared with the zygote (it made an empty program 25 ms slower) and holds
    nothing of the program's."""
    code, namespace = job
    before = set(sys.modules)
    status = 0
    interrupted = False
    try:
        exec(code, namespace)  # noqa: S102 - the call's own program, in its own process
    except SystemExit as exc:
        status = _exit_code(exc)
    except BaseException as exc:  # the traceback a fresh interpreter prints: without this frame
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        status, interrupted = 1, isinstance(exc, KeyboardInterrupt)
    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()
        atexit = sys.modules.get("atexit")
        if atexit is not None:
            atexit._run_exitfuncs()
    except SystemExit as exc:
        status = _exit_code(exc)
    except BaseException as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    namespace.clear()
    for name in set(sys.modules) - before:
        sys.modules.pop(name, None)
    gc.collect()  # the program's own objects only: the zygote's are frozen
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if interrupted:
        _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
        os.kill(os.getpid(), _signal.SIGINT)
    os._exit(status)


if __name__ == "__main__":
    _run(_serve())
