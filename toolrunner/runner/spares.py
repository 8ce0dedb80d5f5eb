"""One spare shell, started ahead with an identity of its own, for the next new session's first `bash`.

Starting bash and reading its boot file is most of a new session's first call, and every call made outside
a session (the direct tool API) is such a first call. The spare belongs to a placeholder session that holds
a pool uid and a private directory; a new session that has no identity yet takes all three, so handing it
over changes nothing but the owner's name.

A new session's first `python` call takes the spare too, and asks for the next spare to come with a zygote
of its uid (toolrunner.runner.zygote): zygotes are kept by uid, so the session that adopts that uid forks
its `python` calls at once, a session-less call included. Only a spare refilled after a `python` call gets
one, so a run of session-less `bash` calls does not pay for an interpreter nobody uses.
"""

from __future__ import annotations

import threading

from toolrunner.runner.bashshell import Shell
from toolrunner.runner.context import ToolFailure
from toolrunner.runner.identity import IdentityError
from toolrunner.runner.state import Runtime, Session
from toolrunner.runner.zygote import ZYGOTES


class SpareShells:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spare: Shell | None = None
        self._filling = False

    def take(self, session: Session) -> Shell | None:
        """A started shell now owned by `session`, or None (also when the session already has a uid: the
        spare runs as another). Call `refill` once the call is answered."""
        if not session.adopt_ready():
            return None
        with self._lock:
            shell, self._spare = self._spare, None
        if shell is None:
            return None
        if shell.sh is None or not shell.sh.alive():
            shell.session.close()
            return None
        if not session.adopt(shell.session):
            shell.session.close()
            return None
        shell.session = session
        return shell

    def refill(self, runtime: Runtime, *, python: bool = False) -> None:
        """Start the next spare (with a zygote when `python`: the spare was taken by a python call)."""
        with self._lock:
            if self._filling or self._spare is not None:
                return
            self._filling = True
        threading.Thread(target=self._fill, args=(runtime, python), name="spare-shell", daemon=True).start()

    def _fill(self, runtime: Runtime, python: bool) -> None:
        shell = None
        placeholder = Session("spare", runtime)
        try:
            shell = Shell(placeholder)
            shell.prestart()
            if python:
                ZYGOTES.start_now(placeholder.ident, runtime.python, placeholder.env_without_credential())
        except (OSError, ToolFailure, IdentityError):
            shell = None  # pids, /tmp or uids exhausted: sessions start their own shells, as without spares
            placeholder.close()
        finally:
            with self._lock:
                self._spare = shell
                self._filling = False

    def close(self) -> None:
        with self._lock:
            shell, self._spare = self._spare, None
        if shell is not None:
            shell.session.close()


SPARES = SpareShells()
