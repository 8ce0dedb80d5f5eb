"""Proxy credentials: which session and call a connection belongs to, told by a token only that call holds.

The runner puts a call's token in its ``HTTP(S)_PROXY`` (``http://<token>:x@127.0.0.1:3128``); clients send
it as ``Proxy-Authorization: Basic``. Another session cannot read it (its own uid, and ``/proc/<pid>/environ``
needs the same uid), so a token can only be replayed by the session it was given to. When the call ends its
token keeps naming the session (without a call) until the session ends, so a background process's later
connection is attributed to the session, never lost. A missing or unknown token gets ``None`` here and a 407
from the proxy.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass

from toolrunner.egress.proxy import Attribution, Identity


@dataclass(frozen=True)
class _Grant:
    tenant: str
    session: str
    call_id: str | None


class CredentialRegistry:
    """Tokens issued per call; thread-safe (the manager issues them, the proxy's loop reads them)."""

    def __init__(self) -> None:
        self._grants: dict[str, _Grant] = {}
        self._lock = threading.Lock()

    def issue(self, tenant: str, session: str, call_id: str) -> str:
        """A new token for one call (URL-safe, 128 bits)."""
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._grants[token] = _Grant(tenant, session, call_id)
        return token

    def end_call(self, token: str) -> None:
        """The call is over: the token now names only its session."""
        with self._lock:
            grant = self._grants.get(token)
            if grant is not None:
                self._grants[token] = _Grant(grant.tenant, grant.session, None)

    def end_session(self, tenant: str, session: str) -> None:
        """The session is gone: its tokens name nothing any more."""
        with self._lock:
            for token in [t for t, g in self._grants.items() if (g.tenant, g.session) == (tenant, session)]:
                del self._grants[token]

    def attribute(self, identity: Identity, credential: str | None) -> Attribution | None:
        """The session and call of ``credential``, or None when it is missing, unknown, or another tenant's
        (a token never crosses tenants, whatever the socket it arrives on)."""
        if credential is None:
            return None
        with self._lock:
            grant = self._grants.get(credential)
        if grant is None or grant.tenant != identity.tenant:
            return None
        return Attribution(grant.session, grant.call_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._grants)
