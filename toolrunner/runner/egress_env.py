"""A session's proxy variables under ``allowlist``, derived from the container's egress key.

Kept apart from the forwarder (egress_forward.py) so that every runner can import it without asyncio: the
forwarder is imported only when the host mounted a proxy socket. The host recomputes the same credential
(toolrunner/egress/credentials.py) to name the session; docs/egress.md says why no other session can use it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse

SOCKET = "/run/openanalyst/egress/proxy.sock"
LISTEN = "127.0.0.1:3128"
#: The container variable carrying the tenant container's egress key (hex). The runner strips OPENANALYST_*
#: variables from the tools' environment, and /proc/<runner or tini>/environ is not readable by session uids.
KEY_VARIABLE = "OPENANALYST_EGRESS_KEY"


def session_credential(key: bytes, session: str) -> str:
    """The proxy credential of ``session``: ``<session>.<HMAC-SHA256(key, session), 128 bits, base64url>``.
    The runner puts it in the session's HTTP(S)_PROXY; the host recomputes it (toolrunner/egress/credentials.py)."""
    mac = hmac.new(key, session.encode(), hashlib.sha256).digest()[:16]
    return f"{session}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def session_proxy_env(key: bytes, session: str, listen: str = LISTEN) -> dict[str, str]:
    """What a session's base environment gets: every spelling of the proxy variables, nothing exempted."""
    url = f"http://{urllib.parse.quote(session_credential(key, session), safe='')}:x@{listen}"
    return {"HTTP_PROXY": url, "HTTPS_PROXY": url, "http_proxy": url, "https_proxy": url,
            "NO_PROXY": "", "no_proxy": ""}
