"""Where the server is and who we are: arguments first, then the environment, then defaults.

The variables are ``OPENANALYST_SERVER_URL``, ``OPENANALYST_SERVER_API_KEY`` and ``OPENANALYST_TENANT``. Not
``OPENANALYST_API_KEY``/``OPENANALYST_BASE_URL``: the server already reads those as the upstream OpenAnalyst
provider's credentials, and a client that picked them up would send a provider key to our server (or the
reverse) on a machine that runs both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

DEFAULT_URL = "http://127.0.0.1:3080"
POOL_LIMITS = httpx.Limits(keepalive_expiry=2.0)
"""Idle pooled connections are dropped after 2 s, well before the server's own idle timeout (5 s by default):
with httpx's default of 5 s a request could be sent on a connection the server was closing at that moment,
and a POST that fails that way is not retried (it may have run)."""
URL_VAR, KEY_VAR, TENANT_VAR = "OPENANALYST_SERVER_URL", "OPENANALYST_SERVER_API_KEY", "OPENANALYST_TENANT"


@dataclass(frozen=True)
class ClientConfig:
    """Everything a client needs; ``resolve`` fills the gaps from the environment.

    ``max_retries`` bounds the retries of one request on 429/503 and on connection failures; a server that
    asks (``Retry-After``) for longer than ``max_retry_wait`` seconds is not waited for (the error is raised).
    ``max_reconnects`` bounds consecutive reconnects of a resumable stream that make no progress.
    """

    base_url: str = DEFAULT_URL
    api_key: str | None = None
    tenant: str | None = None
    timeout: float = 60.0
    max_retries: int = 3
    max_retry_wait: float = 30.0
    max_reconnects: int = 5

    @classmethod
    def resolve(cls, base_url: str | None = None, *, api_key: str | None = None, tenant: str | None = None,
                env: Mapping[str, str] | None = None, timeout: float = 60.0, max_retries: int = 3,
                max_retry_wait: float = 30.0, max_reconnects: int = 5) -> ClientConfig:
        environ = os.environ if env is None else env
        url = base_url or environ.get(URL_VAR) or DEFAULT_URL
        return cls(base_url=url.rstrip("/"), api_key=api_key or environ.get(KEY_VAR) or None,
                   tenant=tenant or environ.get(TENANT_VAR) or None, timeout=timeout, max_retries=max_retries,
                   max_retry_wait=max_retry_wait, max_reconnects=max_reconnects)

    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": "openanalyst-client/0.1", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if self.tenant:
            headers["X-Tenant-ID"] = self.tenant
        return headers
