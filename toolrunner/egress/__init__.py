"""The host-side egress proxy for sandboxes under ``network = "allowlist"`` (docs/egress.md).

Host side only, like the rest of toolrunner outside ``runner/``: it never ships into the sandbox image.
"""

from toolrunner.egress.addresses import AddressPolicy, address_kind
from toolrunner.egress.credentials import CredentialRegistry, SessionKeys
from toolrunner.egress.hub import EgressHub
from toolrunner.egress.proxy import Attribution, EgressProxy, Identity
from toolrunner.egress.records import ConnectionRecord, ConnectionSink, MemorySink
from toolrunner.egress.resolver import ResolveError, Resolver, StaticResolver, SystemResolver
from toolrunner.egress.thread import ProxyThread

__all__ = [
    "AddressPolicy",
    "Attribution",
    "ConnectionRecord",
    "ConnectionSink",
    "CredentialRegistry",
    "EgressHub",
    "EgressProxy",
    "Identity",
    "MemorySink",
    "ProxyThread",
    "ResolveError",
    "Resolver",
    "SessionKeys",
    "StaticResolver",
    "SystemResolver",
    "address_kind",
]
