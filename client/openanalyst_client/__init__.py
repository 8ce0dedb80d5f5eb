"""Python client for the OpenAnalyst agent server: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

Typed results (``models``), typed SSE events (``events``) from streams that resume after a dropped
connection, bounded retries honouring ``Retry-After``, typed errors carrying the server's ``code``
(``errors``), and an offline verifier for audit exports (``audit_verify``). It imports nothing of the server.
"""

from openanalyst_client._async_http import AsyncEventStream
from openanalyst_client._sync_http import EventStream
from openanalyst_client.async_client import AsyncClient
from openanalyst_client.audit_verify import verify_export
from openanalyst_client.client import Client
from openanalyst_client.config import ClientConfig
from openanalyst_client.errors import (
    APIError,
    AuditVerificationError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    OpenAnalystError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    StreamInterrupted,
    TransportError,
    UnprocessableError,
)

__all__ = [
    "APIError",
    "AsyncClient",
    "AsyncEventStream",
    "AuditVerificationError",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ClientConfig",
    "ConflictError",
    "EventStream",
    "NotFoundError",
    "OpenAnalystError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "StreamInterrupted",
    "TransportError",
    "UnprocessableError",
    "verify_export",
]
