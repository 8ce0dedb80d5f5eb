"""AWS Signature Version 4 for Bedrock requests (no botocore at runtime).

Follows the documented algorithm: canonical request → string to sign → HMAC chain of date, region, service.
Checked against AWS's published test-suite vectors in ``tests/unit/test_provider_bedrock.py``. For services
other than S3 the canonical URI encodes the (already encoded) path once more, as botocore does.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    k = _hmac(("AWS4" + secret_key).encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def _canonical_query(query: str) -> str:
    pairs = []
    for item in query.split("&") if query else []:
        name, _, value = item.partition("=")
        pairs.append((quote(name, safe="-_.~"), quote(value, safe="-_.~")))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def sign(method: str, url: str, headers: dict[str, str], body: bytes, *, access_key: str, secret_key: str,
         region: str, service: str, session_token: str | None = None,
         now: datetime | None = None) -> dict[str, str]:
    """The headers to add to the request: ``x-amz-date``, ``authorization`` (and the session token)."""
    when = (now or datetime.now(UTC)).astimezone(UTC)
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    parts = urlsplit(url)
    added = {"x-amz-date": amz_date}
    if session_token:
        added["x-amz-security-token"] = session_token
    signed = {k.lower(): " ".join(v.strip().split()) for k, v in {**headers, **added}.items()}
    signed.setdefault("host", parts.netloc)
    names = sorted(signed)
    canonical_headers = "".join(f"{n}:{signed[n]}\n" for n in names)
    signed_headers = ";".join(names)
    canonical_uri = quote(parts.path or "/", safe="/-_.~")
    canonical = "\n".join([method.upper(), canonical_uri, _canonical_query(parts.query), canonical_headers,
                           signed_headers, hashlib.sha256(body).hexdigest()])
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    signature = hmac.new(signing_key(secret_key, date, region, service), to_sign.encode(),
                         hashlib.sha256).hexdigest()
    added["authorization"] = (f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={signed_headers}, "
                              f"Signature={signature}")
    return added
