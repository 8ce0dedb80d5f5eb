"""Proxy credentials: which session and call a connection belongs to. Two registries with one interface
(``attribute``): ``CredentialRegistry``, a random token per call that the host hands over with the call (the
server's own web_fetch), and ``SessionKeys``, a credential per call that the runner derives itself from a
per-container key and the call's id (docs/egress.md says which the wiring uses and why).

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
from toolrunner.runner.egress_env import call_credential, parse_credential


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
    environment, ``egress_env.KEY_VARIABLE``), the runner derives each call's credential from it and the call's
    id (``egress_env.call_credential``: ``<session>.<call>.<MAC>``) and puts it in the environment of every
    process that call starts; this side checks the MAC (constant-time) and names the session and the call the
    credential names: the call whose process connects, whether or not that call still runs.

    A credential is refused (None, hence 407) unless its MAC is right for the tenant's current key and its call
    was begun (``begin_call``) for that session: so a session cannot name a call of another session, nor a
    call id it made up. The calls begun are kept per tenant, at most ``max_calls`` (the least recently begun or
    used go first), and forgotten when their session ends (``end_session``) or the tenant's key changes, but
    for the calls still running then (between ``begin_call`` and ``end_call``): a call is begun before its
    container is made, and a new container is what brings a new key. The
    old session-only credential (``<session>.<MAC>``) is refused: it could not say which call connected.
    Thread-safe.
    """

    def __init__(self, *, max_calls: int = 16384) -> None:
        self._keys: dict[str, bytes] = {}
        # tenant -> {(session, call id): None}, oldest first (a dict keeps insertion order)
        self._calls: dict[str, dict[tuple[str, str], None]] = {}
        self._running: dict[tuple[str, str, str], int] = {}  # (tenant, session, call id) -> begun, not ended
        self._max_calls = max_calls
        self._lock = threading.Lock()

    def new_key(self, tenant: str) -> bytes:
        """A fresh key for the tenant's next container (the old container's credentials stop working)."""
        key = secrets.token_bytes(32)
        with self._lock:
            self._keys[tenant] = key
            kept = {(session, call): None for (t, session, call) in self._running if t == tenant}
            self._calls.pop(tenant, None)
            if kept:
                self._calls[tenant] = kept
        return key

    def forget(self, tenant: str) -> None:
        with self._lock:
            self._keys.pop(tenant, None)
            self._calls.pop(tenant, None)
            for running in [r for r in self._running if r[0] == tenant]:
                del self._running[running]

    def begin_call(self, tenant: str, session: str, call_id: str) -> None:
        """``call_id`` runs in ``session`` from now on: its credential names it (also after it ended). Only
        tenants with a key keep a record of ended calls (the others have no container with a way out), so a
        server of tenants without egress holds nothing per call but the calls running."""
        with self._lock:
            self._running[(tenant, session, call_id)] = self._running.get((tenant, session, call_id), 0) + 1
            if tenant not in self._keys:
                return  # new_key takes the running calls over when the tenant's container is made
            calls = self._calls.setdefault(tenant, {})
            calls.pop((session, call_id), None)
            calls[(session, call_id)] = None
            while len(calls) > self._max_calls:
                del calls[next(iter(calls))]

    def end_call(self, tenant: str, session: str, call_id: str) -> None:
        """The call returned. Its credential still names it (a process it left may connect later)."""
        with self._lock:
            left = self._running.get((tenant, session, call_id), 0) - 1
            if left > 0:
                self._running[(tenant, session, call_id)] = left
            else:
                self._running.pop((tenant, session, call_id), None)

    def end_session(self, tenant: str, session: str) -> None:
        """The session is closed (its processes killed): its calls' credentials name nothing any more."""
        with self._lock:
            calls = self._calls.get(tenant)
            if calls is None:
                return
            for pair in [p for p in calls if p[0] == session]:
                del calls[pair]
            if not calls:
                del self._calls[tenant]

    def attribute(self, identity: Identity, credential: str | None) -> Attribution | None:
        """The session and call a credential names (MAC checked with the tenant's key, call begun in that
        session), or None."""
        parsed = parse_credential(credential) if credential else None
        if parsed is None:
            return None
        session, call_id, _mac = parsed
        with self._lock:
            key = self._keys.get(identity.tenant)
        expected = call_credential(key, session, call_id) if key is not None else None
        # compare_digest on the whole credential: one spelling per (session, call), MAC checked in constant time
        if expected is None or not hmac.compare_digest(expected.encode(), (credential or "").encode()):
            return None
        with self._lock:
            calls = self._calls.get(identity.tenant)
            if calls is None or (session, call_id) not in calls or self._keys.get(identity.tenant) != key:
                return None
            calls[(session, call_id)] = calls.pop((session, call_id))  # used: the last to be dropped
        return Attribution(session, call_id)


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
