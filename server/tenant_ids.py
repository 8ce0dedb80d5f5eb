"""From the ``X-Tenant-ID`` a deployment sends to the tenant name used for rows, directories and containers.

Real deployments send emails, ``auth0|…`` subjects, ``org:team``: any printable ASCII without spaces, up to
256 characters. Names must be safe as a directory and a container label (``[A-Za-z0-9._-]``, 1-64, no
leading dot), so:

* an id that is already such a name, and not of the mapped shape below, is its own name: tenants that
  existed before keep their directories, containers and rows;
* any other id becomes ``<readable prefix>--<24 hex of SHA-256 of the exact id>``: the prefix is for
  people reading ``ls``; the hash alone tells ids apart (case, punctuation and length all change it).

The two sets cannot meet: an id of the mapped shape (``…--`` and 24 hex digits) is always hashed itself, so
no header can name another tenant's mapped name; two different ids map apart unless SHA-256 collides in 96
bits. The reserved ``owner`` is refused before this.
"""

from __future__ import annotations

import hashlib
import re

from toolrunner.config import TENANT_ID

HEADER_RE = re.compile(r"^[!-~]{1,256}$")
"""What ``X-Tenant-ID`` accepts: printable ASCII, no spaces or controls, 1-256 characters."""
NAME_RE = TENANT_ID
"""A tenant name as the sandbox manager and the data directory take it (toolrunner.config.TENANT_ID itself)."""
MAPPED_RE = re.compile(r"^.*--[0-9a-f]{24}$")
PREFIX_CHARS = 37  # 37 + 2 + 24 = 63 characters
_UNSAFE = re.compile(r"[^a-z0-9._-]+")


def tenant_name(tenant_id: str) -> str:
    """The safe name of a valid header id (``HEADER_RE``, not ``owner``)."""
    if NAME_RE.fullmatch(tenant_id) and not MAPPED_RE.match(tenant_id):
        return tenant_id
    digest = hashlib.sha256(tenant_id.encode()).hexdigest()[:24]
    prefix = _UNSAFE.sub("_", tenant_id.lower())[:PREFIX_CHARS].lstrip(".") or "t"
    return f"{prefix}--{digest}"
