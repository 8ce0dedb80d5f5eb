"""LLM providers: one adapter per wire format, the registry of named providers, failover and breaker.

The agent loop needs only ``ProviderRouter`` and the normalised types re-exported here.
"""

from server.providers.config import RouterConfig
from server.providers.credentials import CredentialLookup, ProviderCredential, StaticCredentials
from server.providers.failover import AllProvidersFailed, NoProviderConfigured, ProviderRouter, ProviderStatus
from server.providers.pricing import PriceTable, cost_usd
from server.providers.registry import PROVIDERS, credentials_from_env
from server.providers.types import (
    Attempt,
    ChatRequest,
    Discarded,
    Message,
    ProviderError,
    Stop,
    StreamEvent,
    TextBlock,
    TextDelta,
    ToolCall,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    Usage,
)

__all__ = [
    "PROVIDERS",
    "AllProvidersFailed",
    "Attempt",
    "ChatRequest",
    "CredentialLookup",
    "Discarded",
    "Message",
    "NoProviderConfigured",
    "PriceTable",
    "ProviderCredential",
    "ProviderError",
    "ProviderRouter",
    "ProviderStatus",
    "RouterConfig",
    "StaticCredentials",
    "Stop",
    "StreamEvent",
    "TextBlock",
    "TextDelta",
    "ToolCall",
    "ToolResultBlock",
    "ToolSpec",
    "ToolUseBlock",
    "Usage",
    "cost_usd",
    "credentials_from_env",
]
