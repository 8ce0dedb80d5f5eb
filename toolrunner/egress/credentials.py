"""Proxy credentials: which session and call a connection belongs to. Two registries with one interface
(``attribute``): ``CredentialRegistry``, a random token per call that the host hands to the runner with the
call, and ``SessionKeys``, a credential per session that the runner derives itself from a per-container key,
so that no frame of the protocol has to change (docs/egress.md says which the wiring uses and why).

``CredentialRegistry``, in detail:

The runner puts a call's token in its ``HTTP(S)_PROXY`` (``http://<token>:x@127.0.0.1:3128``); clients send
it as ``Proxy-Authorization: Basic``. Another session cannot read it (its own uid, and ``/proc/<pid>/environ``
needs the same uid), so a token can only be replayed by the session it was given to. When the call ends its
token keeps naming the session (without a call) until the session ends, so a background process's later
connection is attributed to the session, never lost. A missing or unknown token gets ``None`` here and a 407
from the proxy.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from dataclasses import dataclass

from toolrunner.egress.proxy import Attribute, Attribution, Identity
from toolrunner.runner.egress_env import session_credential


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

    def revoke(self, token: str) -> None:
        """The token names nothing any more (its holder made all its connections: web_fetch after a fetch)."""
        with self._lock:
            self._grants.pop(token, None)

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


class SessionKeys:
    """Credentials without a per-call message to the runner: each tenant container gets a random key (in its
    environment, ``egress_env.KEY_VARIABLE``), the runner derives each session's credential from it
    (``egress_env.session_credential``), and this side checks the MAC and names the session. The call is the
    session's one call in flight, if there is exactly one; otherwise (none: a background process after its
    call; several at once) the connection is the session's. Thread-safe.
    """

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}
        self._calls: dict[tuple[str, str], list[str]] = {}
        self._lock = threading.Lock()

    def new_key(self, tenant: str) -> bytes:
        """A fresh key for the tenant's next container (the old container's credentials stop working)."""
        key = secrets.token_bytes(32)
        with self._lock:
            self._keys[tenant] = key
        return key

    def forget(self, tenant: str) -> None:
        with self._lock:
            self._keys.pop(tenant, None)
            for pair in [p for p in self._calls if p[0] == tenant]:
                del self._calls[pair]

    def begin_call(self, tenant: str, session: str, call_id: str) -> None:
        with self._lock:
            self._calls.setdefault((tenant, session), []).append(call_id)

    def end_call(self, tenant: str, session: str, call_id: str) -> None:
        with self._lock:
            calls = self._calls.get((tenant, session), [])
            if call_id in calls:
                calls.remove(call_id)
            if not calls:
                self._calls.pop((tenant, session), None)

    def attribute(self, identity: Identity, credential: str | None) -> Attribution | None:
        """The session whose credential this is (MAC checked with the tenant's key) and its call, or None."""
        if not credential or "." not in credential:
            return None
        session = credential.rpartition(".")[0]
        with self._lock:
            key = self._keys.get(identity.tenant)
            calls = list(self._calls.get((identity.tenant, session), []))
        if key is None or not hmac.compare_digest(session_credential(key, session), credential):
            return None
        return Attribution(session, calls[0] if len(calls) == 1 else None)


def first_attribution(*sources: Attribute) -> Attribute:
    """One ``attribute`` hook from several: the first that recognises the credential wins (the sandbox's session
    credentials and the server's own per-call tokens for web_fetch share one proxy)."""
    def attribute(identity: Identity, credential: str | None) -> Attribution | None:
        for source in sources:
            found = source(identity, credential)
            if found is not None:
                return found
        return None
    return attribute
