"""One spare bash, started ahead, for the next session that needs a shell.

Starting bash and reading its boot file is most of a session's first `bash` call (about 10 ms in a
container), and every call made outside a session (the direct tool API) is such a first call. A spare shell
is booted with a fresh state and no session's values, so handing it to a session changes nothing but who
owns it: the state files it writes are its own, and each call's processes carry the session's marker.
"""

from __future__ import annotations

import threading

from toolrunner.runner.bashshell import Shell
from toolrunner.runner.context import ToolFailure
from toolrunner.runner.state import Runtime, Session


class SpareShells:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spare: Shell | None = None
        self._filling = False

    def take(self, session: Session) -> Shell | None:
        """A booted shell now owned by `session`, or None; call `refill` once the call is answered (starting
        bash beside the call would slow it down under the container's CPU quota)."""
        with self._lock:
            shell, self._spare = self._spare, None
        if shell is None:
            return None
        if shell.proc is None or shell.proc.poll() is not None:
            shell.reset()
            return None
        shell.session = session
        return shell

    def refill(self, runtime: Runtime) -> None:
        with self._lock:
            if self._filling or self._spare is not None:
                return
            self._filling = True
        threading.Thread(target=self._fill, args=(runtime,), name="spare-shell", daemon=True).start()

    def _fill(self, runtime: Runtime) -> None:
        shell = None
        try:
            shell = Shell(Session("spare", runtime))
            shell.prestart()
        except (OSError, ToolFailure):
            shell = None  # pids or /tmp exhausted: sessions start their own shells, as without spares
        finally:
            with self._lock:
                self._spare = shell
                self._filling = False

    def close(self) -> None:
        with self._lock:
            shell, self._spare = self._spare, None
        if shell is not None:
            shell.reset()


SPARES = SpareShells()
