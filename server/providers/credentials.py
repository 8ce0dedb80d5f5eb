"""Provider credentials: the key never appears in a repr, a log line or an error message.

``ProviderCredential`` is what the server's credential store hands the router; ``fingerprint`` (a hash of the
secrets) is what the breaker keys an auth failure on, so a changed key is tried again and an unchanged one
is not.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

SECRET_EXTRA_KEYS = frozenset({"secret_access_key", "session_token", "bearer_token", "access_token"})
_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"AKIA[0-9A-Z]{12,}"),
    re.compile(r"AIza[0-9A-Za-z_\-]{10,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-~+/=]{6,}"),
    re.compile(r"(?i)(x-api-key|x-goog-api-key|api[_-]?key)([\"':= ]+)[A-Za-z0-9._\-]{6,}"),
]


@dataclass(frozen=True, repr=False)
class ProviderCredential:
    """One provider's credential for one tenant; ``extra`` holds e.g. Bedrock's region and key id."""

    provider: str
    api_key: str | None
    base_url: str | None = None
    source: Literal["env", "api"] = "env"
    extra: dict[str, Any] = field(default_factory=dict)

    def secrets(self) -> list[str]:
        """Every secret value held, for redaction."""
        values = [self.api_key] + [str(v) for k, v in self.extra.items() if k in SECRET_EXTRA_KEYS]
        return [v for v in values if v]

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256("\0".join(self.secrets()).encode()).hexdigest()
        return digest[:16]

    def __repr__(self) -> str:
        extra = {k: ("[redacted]" if k in SECRET_EXTRA_KEYS else v) for k, v in self.extra.items()}
        key = "[redacted]" if self.api_key else None
        return (f"ProviderCredential(provider={self.provider!r}, api_key={key},"
                f" base_url={self.base_url!r}, source={self.source!r}, extra={extra!r})")

    __str__ = __repr__


class CredentialLookup(Protocol):
    """Implemented by the server's credential store: a tenant's configured providers by name."""

    async def credentials(self, tenant_id: str) -> dict[str, ProviderCredential]: ...


class StaticCredentials:
    """The same credentials for every tenant (tests, single-tenant setups built from the environment)."""

    def __init__(self, creds: Iterable[ProviderCredential]) -> None:
        self._creds = {c.provider: c for c in creds}

    def set(self, cred: ProviderCredential) -> None:
        self._creds[cred.provider] = cred

    async def credentials(self, tenant_id: str) -> dict[str, ProviderCredential]:
        return dict(self._creds)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove known secrets and anything shaped like a key from ``text``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    for pattern in _PATTERNS:
        if pattern.groups == 0:
            text = pattern.sub("[redacted]", text)
        elif pattern.groups == 1:
            text = pattern.sub(r"\1[redacted]", text)
        else:
            text = pattern.sub(r"\1\2[redacted]", text)
    return text
