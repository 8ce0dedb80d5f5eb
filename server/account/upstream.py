"""The account service as the server calls it: the small HTTP contract docs/account.md defines.

Every failure becomes a domain error with a stable code; the tokens travel only in request and response
bodies (never a URL, so never an access-log line) and never appear in an error message.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import httpx

from server.errors import ApiError, BadRequest, ServiceUnavailable, TooManyRequests

TIMEOUT = httpx.Timeout(15.0, connect=5.0)


class AccountServiceUnavailable(ApiError):
    """The account service could not be reached or answered something outside the contract."""

    status = 502

    def __init__(self, detail: str) -> None:
        super().__init__("ACCOUNT_SERVICE_UNAVAILABLE", f"the OpenAnalyst account service failed: {detail}")


class TokenRevoked(Exception):
    """The refresh (or access) token is no longer accepted: the sign-in is over."""


@dataclass(frozen=True)
class Challenge:
    challenge_id: str | None
    destination: str | None
    delivery_medium: str | None
    expires_at_ms: int | None
    retry_after_s: int | None  # set: rate limited, nothing was sent


@dataclass(frozen=True, repr=False)
class Tokens:
    access_token: str
    refresh_token: str
    expires_in_s: float
    email: str

    def __repr__(self) -> str:
        return f"Tokens(email={self.email!r}, expires_in_s={self.expires_in_s}, [tokens redacted])"


BALANCE_FIELDS = ("plan_name", "plan_limit", "plan_used", "plan_remaining", "purchases_total",
                  "purchases_remaining", "total_available")


def _retry_after(resp: httpx.Response, body: dict[str, Any]) -> int:
    value = body.get("retry_after_seconds") or resp.headers.get("retry-after") or 1
    try:
        return max(1, int(float(value)))
    except ValueError:
        return 1


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        raise AccountServiceUnavailable(f"HTTP {resp.status_code} with a body that is not JSON") from None
    if not isinstance(body, dict):
        raise AccountServiceUnavailable(f"HTTP {resp.status_code} with a body that is not an object")
    return body


def _tokens(body: dict[str, Any]) -> Tokens:
    try:
        return Tokens(str(body["access_token"]), str(body["refresh_token"]), float(body["expires_in"]),
                      str(body["email"]))
    except (KeyError, TypeError, ValueError):
        raise AccountServiceUnavailable("a token answer without access_token, refresh_token, expires_in, "
                                        "email") from None


class AccountClient:
    """Calls the account service at ``base_url`` (the ``account_service_url`` setting)."""

    def __init__(self, base_url: str | None, http: httpx.AsyncClient) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self._http = http

    async def _post(self, path: str, payload: dict[str, Any], token: str | None = None) -> httpx.Response:
        if self.base_url is None:
            raise ServiceUnavailable("ACCOUNT_SERVICE_NOT_CONFIGURED",
                                     "no account service is configured: set OPENANALYST_ACCOUNT_SERVICE_URL")
        headers = {"authorization": f"Bearer {token}"} if token else {}
        try:
            return await self._http.post(self.base_url + path, json=payload, headers=headers, timeout=TIMEOUT)
        except httpx.HTTPError as exc:
            raise AccountServiceUnavailable(type(exc).__name__) from None

    async def start(self, email: str) -> Challenge:
        resp = await self._post("/v1/auth/otp/start", {"email": email})
        body = _json(resp)
        if resp.status_code == 429:
            return Challenge(None, None, None, None, _retry_after(resp, body))
        if resp.status_code == 400:
            raise BadRequest("INVALID_EMAIL", str(body.get("message") or "the account service refused the email"))
        if resp.status_code != 200:
            raise AccountServiceUnavailable(f"HTTP {resp.status_code}")
        delivery = body.get("code_delivery") or {}
        return Challenge(str(body["challenge_id"]), delivery.get("destination"), delivery.get("delivery_medium"),
                         int(body["expires_at"]) if body.get("expires_at") is not None else None, None)

    async def verify(self, email: str, code: str, challenge_id: str) -> Tokens:
        resp = await self._post("/v1/auth/otp/verify", {"email": email, "code": code, "challenge_id": challenge_id})
        body = _json(resp)
        if resp.status_code == 429:
            seconds = _retry_after(resp, body)
            raise TooManyRequests("OTP_RATE_LIMITED", f"too many attempts; retry in {seconds} s",
                                  retry_after_s=seconds)
        if resp.status_code in (400, 401, 404, 410):
            reason = str(body.get("error") or "")
            if reason == "challenge_expired":
                raise BadRequest("OTP_EXPIRED", "the code has expired; start again with POST /me/auth/otp/start")
            if reason == "unknown_challenge":
                raise BadRequest("OTP_CHALLENGE_UNKNOWN", "no such challenge; start with POST /me/auth/otp/start")
            raise BadRequest("OTP_INVALID", "the code is not valid for this challenge")
        if resp.status_code != 200:
            raise AccountServiceUnavailable(f"HTTP {resp.status_code}")
        return _tokens(body)

    async def refresh(self, refresh_token: str) -> Tokens:
        resp = await self._post("/v1/auth/refresh", {"refresh_token": refresh_token})
        if resp.status_code in (400, 401, 403):
            raise TokenRevoked()
        if resp.status_code != 200:
            raise AccountServiceUnavailable(f"HTTP {resp.status_code} on refresh")
        return _tokens(_json(resp))

    async def balance(self, access_token: str) -> dict[str, Any]:
        """The plan and credits; ``TokenRevoked`` when the access token is refused."""
        if self.base_url is None:
            raise ServiceUnavailable("ACCOUNT_SERVICE_NOT_CONFIGURED",
                                     "no account service is configured: set OPENANALYST_ACCOUNT_SERVICE_URL")
        try:
            resp = await self._http.get(self.base_url + "/v1/account/balance", timeout=TIMEOUT,
                                        headers={"authorization": f"Bearer {access_token}"})
        except httpx.HTTPError as exc:
            raise AccountServiceUnavailable(type(exc).__name__) from None
        if resp.status_code in (401, 403):
            raise TokenRevoked()
        if resp.status_code != 200:
            raise AccountServiceUnavailable(f"HTTP {resp.status_code} on balance")
        body = _json(resp)
        return {k: body.get(k) for k in BALANCE_FIELDS}

    async def logout(self, refresh_token: str) -> None:
        """Best effort: the local credential is wiped whatever the service says."""
        with contextlib.suppress(ApiError):
            await self._post("/v1/auth/logout", {"refresh_token": refresh_token})
