"""The tool audit log: hash-chained per-tenant records of every tool call, with a signed head per tenant.

Only ``records``, ``keys``, ``verify`` and ``cli`` are needed to check an export offline; all of this package
uses the standard library only (the HTTP router lives in ``server.api.audit``).
"""
