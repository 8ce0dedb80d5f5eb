"""The sign-in flow per tenant: start, verify, status (refreshing within 60 s of expiry), logout, the
preferred source, and the credential inference uses. A refused refresh ends the sign-in (the token is wiped)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.account.tokens import OAuthToken, OAuthTokenStore, Source
from server.account.upstream import AccountClient, Challenge, TokenRevoked, Tokens
from server.errors import ApiError
from server.providers.credentials import ProviderCredential
from server.store.credentials import CredentialStore

log = logging.getLogger(__name__)
REFRESH_WITHIN_S = 60.0


@dataclass(frozen=True)
class Status:
    signed_in: bool
    email: str | None
    expires_at: float | None
    balance: dict[str, Any] | None
    manual_key_present: bool
    preferred_source: Source


class AccountService:
    def __init__(self, client: AccountClient, tokens: OAuthTokenStore, credentials: CredentialStore,
                 provider_base_url: str | None, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._tokens = tokens
        self._credentials = credentials
        self._base_url = provider_base_url
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}

    async def start(self, email: str) -> Challenge:
        return await self._client.start(email)

    async def verify(self, tenant_id: str, email: str, code: str, challenge_id: str) -> Status:
        tokens = await self._client.verify(email, code, challenge_id)
        await self._save(tenant_id, tokens)
        log.info("tenant signed in to its OpenAnalyst account")
        return await self.status(tenant_id)

    async def _save(self, tenant_id: str, tokens: Tokens) -> OAuthToken:
        token = OAuthToken(tokens.access_token, tokens.refresh_token, tokens.email,
                           self._clock() + tokens.expires_in_s)
        await self._tokens.save(tenant_id, token)
        return token

    async def fresh_token(self, tenant_id: str) -> OAuthToken | None:
        """The stored token, refreshed first when it expires within 60 s; None when signed out or revoked."""
        lock = self._locks.setdefault(tenant_id, asyncio.Lock())
        async with lock:  # one refresh at a time per tenant: a refresh token may be single-use
            token = await self._tokens.get(tenant_id)
            if token is None or token.expires_at - self._clock() > REFRESH_WITHIN_S:
                return token
            return await self._refresh(tenant_id, token)

    async def _refresh(self, tenant_id: str, token: OAuthToken) -> OAuthToken | None:
        try:
            tokens = await self._client.refresh(token.refresh_token)
        except TokenRevoked:
            await self._tokens.delete(tenant_id)
            log.warning("the OpenAnalyst account refused the refresh token; the tenant is signed out")
            return None
        except ApiError as exc:  # the service is down: a token not yet expired still works meanwhile
            if token.expires_at > self._clock():
                log.warning("could not refresh the OpenAnalyst token (%s); using it until it expires", exc.code)
                return token
            raise
        return await self._save(tenant_id, tokens)

    async def status(self, tenant_id: str) -> Status:
        token = await self.fresh_token(tenant_id)
        balance: dict[str, Any] | None = None
        if token is not None:
            try:
                balance = await self._balance(tenant_id, token)
            except (ApiError, TokenRevoked) as exc:  # signed in all the same: plan and credits unknown just now
                log.warning("could not read the OpenAnalyst balance (%s)", getattr(exc, "code", "refused"))
            token = await self._tokens.get(tenant_id)
        manual = (await self._credentials.credentials(tenant_id)).get("openanalyst")
        return Status(signed_in=token is not None, email=token.email if token else None,
                      expires_at=token.expires_at if token else None, balance=balance,
                      manual_key_present=bool(manual and manual.api_key),
                      preferred_source=await self.preferred(tenant_id, signed_in=token is not None))

    async def _balance(self, tenant_id: str, token: OAuthToken) -> dict[str, Any] | None:
        try:
            return await self._client.balance(token.access_token)
        except TokenRevoked:  # the access token was refused early: one refresh decides
            async with self._locks.setdefault(tenant_id, asyncio.Lock()):
                fresh = await self._refresh(tenant_id, token)
            return await self._client.balance(fresh.access_token) if fresh is not None else None

    async def preferred(self, tenant_id: str, *, signed_in: bool) -> Source:
        """The stored choice; without one, the sign-in when there is one, else the manual key."""
        return await self._tokens.preference(tenant_id) or ("oauth" if signed_in else "manual")

    async def set_preferred(self, tenant_id: str, source: Source) -> None:
        await self._tokens.set_preference(tenant_id, source)

    async def logout(self, tenant_id: str) -> None:
        token = await self._tokens.get(tenant_id)
        await self._tokens.delete(tenant_id)
        if token is not None:
            await self._client.logout(token.refresh_token)

    async def oauth_credential(self, tenant_id: str) -> ProviderCredential | None:
        """The sign-in as an ``openanalyst`` credential (Bearer), or None."""
        token = await self.fresh_token(tenant_id)
        if token is None:
            return None
        # source "env": the base URL is the server's setting, not one the tenant chose
        return ProviderCredential("openanalyst", token.access_token, self._base_url, "env",
                                  {"auth_method": "oauth"})


class AccountCredentials:
    """The router's credential lookup: the store's credentials with ``openanalyst`` chosen by the preferred
    source (the other one when the preferred is absent)."""

    def __init__(self, store: CredentialStore, account: AccountService) -> None:
        self._store = store
        self._account = account

    async def credentials(self, tenant_id: str) -> dict[str, ProviderCredential]:
        creds = await self._store.credentials(tenant_id)
        try:
            oauth = await self._account.oauth_credential(tenant_id)
        except ApiError as exc:  # expired and the service cannot refresh it: as if signed out, said in the log
            log.warning("the OpenAnalyst sign-in cannot be used now (%s)", exc.code)
            oauth = None
        manual = creds.get("openanalyst")
        if oauth is not None and (manual is None
                                  or await self._account.preferred(tenant_id, signed_in=True) == "oauth"):
            creds["openanalyst"] = oauth
        return creds
