"""The tool audit log: hash-chained per-tenant records of every tool call, each tenant's head signed with the
server's Ed25519 key, signed checkpoints over an RFC 6962 Merkle tree, and a publication hook.

Only ``records``, ``keys``, ``merkle``, ``signing``, ``note``, ``verify``, ``proofcheck`` and ``cli`` are
needed to check an export or a proof offline; they use the standard library and ``cryptography`` only (the
HTTP router lives in ``server.api.audit``). The format is in ``FORMAT.md``; the threat model in
``docs/audit-signing.md``.
"""
