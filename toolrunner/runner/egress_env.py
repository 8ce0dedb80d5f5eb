"""A call's proxy variables under ``allowlist``, derived from the container's egress key.

Kept apart from the forwarder (egress_forward.py) so that every runner can import it without asyncio: the
forwarder is imported only when the host mounted a proxy socket. The host checks the same credential
(toolrunner/egress/credentials.py) to name the session and the call; docs/egress.md says why no other session
can use it.

The credential is ``<session>.<call>.<MAC>``, MAC = HMAC-SHA256(key, session NUL call) cut to 128 bits,
base64url. Session and call ids are written as they are when they hold only ``A-Z a-z 0-9 _ -`` (the server's
own ids: ``sess_…``, ``call_…``, ``oneshot-call_…``), otherwise as ``~`` and the base64url of their UTF-8
(an id a model provider chose may hold anything): so the credential is always safe in a URL's userinfo and
in Basic authentication (no ``:``), and its three parts split at the dots. Every part holds no ``~`` but as
that marker, so each pair of ids has exactly one spelling.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

SOCKET = "/run/openanalyst/egress/proxy.sock"
LISTEN = "127.0.0.1:3128"
#: The container variable carrying the tenant container's egress key (hex). The runner strips OPENANALYST_*
#: variables from the tools' environment, and /proc/<runner or tini>/environ is not readable by session uids.
KEY_VARIABLE = "OPENANALYST_EGRESS_KEY"
#: Session and call ids longer than this get no credential (the runner takes sessions of 1-256 characters).
MAX_ID = 256
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
_PLAIN = re.compile(r"[A-Za-z0-9_-]+")
_MAC = re.compile(r"[A-Za-z0-9_-]{22}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _part(text: str) -> str:
    return text if _PLAIN.fullmatch(text) else "~" + _b64(text.encode("utf-8", "surrogatepass"))


def _unpart(part: str) -> str | None:
    if _PLAIN.fullmatch(part):
        return part
    if not part.startswith("~") or not _PLAIN.fullmatch(part[1:]):
        return None
    try:
        return base64.urlsafe_b64decode(part[1:] + "=" * (-len(part[1:]) % 4)).decode("utf-8", "surrogatepass")
    except (binascii.Error, ValueError):
        return None


def _usable(text: str) -> bool:
    return 0 < len(text) <= MAX_ID and "\0" not in text


def _mac(key: bytes, session: str, call_id: str) -> str:
    message = f"{session}\0{call_id}".encode("utf-8", "surrogatepass")
    return _b64(hmac.new(key, message, hashlib.sha256).digest()[:16])


def call_credential(key: bytes, session: str, call_id: str) -> str | None:
    """The proxy credential of one call of ``session``, or None for ids that cannot be named unambiguously
    (empty, longer than MAX_ID, or holding a NUL, which would blur the MAC's separator)."""
    if not (_usable(session) and _usable(call_id)):
        return None
    return f"{_part(session)}.{_part(call_id)}.{_mac(key, session, call_id)}"


def parse_credential(credential: str) -> tuple[str, str, str] | None:
    """Session, call id and MAC of a credential in the form ``call_credential`` writes, or None. The MAC is
    not checked here: the host does that (``toolrunner.egress.credentials.SessionKeys``)."""
    parts = credential.split(".")
    if len(parts) != 3 or not _MAC.fullmatch(parts[2]):
        return None
    session, call_id = _unpart(parts[0]), _unpart(parts[1])
    if session is None or call_id is None or not (_usable(session) and _usable(call_id)):
        return None
    return session, call_id, parts[2]


def proxy_url(credential: str | None, listen: str = LISTEN) -> str:
    """The forwarder's URL with ``credential`` as the user (none: the proxy answers 407)."""
    return f"http://{credential}:x@{listen}" if credential is not None else f"http://{listen}"


def call_proxy_env(key: bytes, session: str, call_id: str | None, listen: str = LISTEN) -> dict[str, str]:
    """What every process a call starts gets: each spelling of the proxy variables, with the call's credential
    (no call id: no credential, so the proxy refuses), and nothing exempted from the proxy."""
    credential = call_credential(key, session, call_id) if call_id is not None else None
    url = proxy_url(credential, listen)
    return {**dict.fromkeys(PROXY_VARIABLES, url), "NO_PROXY": "", "no_proxy": ""}
