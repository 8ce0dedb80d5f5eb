"""A fake OpenAnalyst account service over real HTTP (127.0.0.1, ephemeral port), speaking the contract of
docs/account.md: OTP start/verify, refresh (rotating), balance, logout, with expiry, rate limits and revocation
that a test can steer. The "emailed" codes land in ``outbox``; every request is recorded."""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Grant:
    email: str
    access_token: str
    refresh_token: str
    expires_at: float


@dataclass
class FakeAccountState:
    token_ttl_s: float = 3600.0
    challenge_ttl_s: float = 300.0
    max_attempts: int = 3  # wrong codes per challenge before 429
    rate_limit_start_s: int | None = None  # set: the next /start answers 429 with this retry_after_seconds
    down: bool = False  # every request answers 503, as a service in an outage
    outbox: dict[str, str] = field(default_factory=dict)  # email → last code sent
    challenges: dict[str, dict[str, Any]] = field(default_factory=dict)
    grants: list[Grant] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)  # method, path, headers
    refreshes: int = 0
    balance: dict[str, Any] = field(default_factory=lambda: {
        "plan_name": "Pro", "plan_limit": 1000, "plan_used": 142, "plan_remaining": 858, "purchases_total": 0,
        "purchases_remaining": 0, "total_available": 858})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: FakeAccountState
    lock: threading.Lock

    def log_message(self, format: str, *args: object) -> None:
        return

    def _send(self, status: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> tuple[bytes, dict[str, Any]]:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {}
        return raw, parsed if isinstance(parsed, dict) else {}

    def _grant(self, email: str) -> dict[str, Any]:
        grant = Grant(email, "oat_FAKEACCT" + secrets.token_hex(20), "ort_FAKEACCT" + secrets.token_hex(20),
                      time.time() + self.state.token_ttl_s)
        self.state.grants.append(grant)
        return {"access_token": grant.access_token, "refresh_token": grant.refresh_token,
                "expires_in": self.state.token_ttl_s, "token_type": "Bearer", "email": email}

    def _live(self, token: str, kind: str) -> Grant | None:
        for grant in self.state.grants:
            if getattr(grant, kind) == token and token not in self.state.revoked:
                if kind == "access_token" and grant.expires_at < time.time():
                    return None
                return grant
        return None

    def do_GET(self) -> None:
        with self.lock:
            self.state.requests.append(("GET", self.path, dict(self.headers), b""))
            if self.state.down:
                return self._send(503, {"error": "unavailable"})
            if self.path != "/v1/account/balance":
                return self._send(404, {"error": "not_found"})
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            grant = self._live(token, "access_token")
            if grant is None:
                return self._send(401, {"error": "invalid_token"})
            return self._send(200, {"email": grant.email, **self.state.balance})

    def do_POST(self) -> None:
        raw, body = self._body()
        with self.lock:
            self.state.requests.append(("POST", self.path, dict(self.headers), raw))
            if self.state.down:
                return self._send(503, {"error": "unavailable"})
            handler = {"/v1/auth/otp/start": self._start, "/v1/auth/otp/verify": self._verify,
                       "/v1/auth/refresh": self._refresh, "/v1/auth/logout": self._logout}.get(self.path)
            if handler is None:
                return self._send(404, {"error": "not_found"})
            handler(body)

    def _start(self, body: dict[str, Any]) -> None:
        st = self.state
        if st.rate_limit_start_s is not None:
            seconds, st.rate_limit_start_s = st.rate_limit_start_s, None
            return self._send(429, {"error": "rate_limited", "retry_after_seconds": seconds},
                              {"Retry-After": str(seconds)})
        email = str(body.get("email") or "")
        if "@" not in email:
            return self._send(400, {"error": "invalid_email", "message": "not an email address"})
        code = f"{secrets.randbelow(10**6):06d}"
        challenge_id = "chl_" + secrets.token_hex(8)
        expires = time.time() + st.challenge_ttl_s
        st.challenges[challenge_id] = {"email": email, "code": code, "expires_at": expires, "attempts": 0}
        st.outbox[email] = code
        name, _, domain = email.partition("@")
        self._send(200, {"challenge_id": challenge_id, "expires_at": int(expires * 1000),
                         "code_delivery": {"destination": f"{name[:1]}***@{domain}", "delivery_medium": "EMAIL"}})

    def _verify(self, body: dict[str, Any]) -> None:
        challenge = self.state.challenges.get(str(body.get("challenge_id")))
        if challenge is None or challenge["email"] != body.get("email"):
            return self._send(400, {"error": "unknown_challenge"})
        if challenge["attempts"] >= self.state.max_attempts:
            return self._send(429, {"error": "rate_limited", "retry_after_seconds": 30}, {"Retry-After": "30"})
        if challenge["expires_at"] < time.time():
            return self._send(400, {"error": "challenge_expired"})
        if body.get("code") != challenge["code"]:
            challenge["attempts"] += 1
            return self._send(400, {"error": "invalid_code"})
        del self.state.challenges[str(body["challenge_id"])]
        self._send(200, self._grant(challenge["email"]))

    def _refresh(self, body: dict[str, Any]) -> None:
        grant = self._live(str(body.get("refresh_token")), "refresh_token")
        if grant is None:
            return self._send(401, {"error": "revoked"})
        self.state.refreshes += 1
        self.state.revoked |= {grant.refresh_token, grant.access_token}  # rotation: the old pair is spent
        self._send(200, self._grant(grant.email))

    def _logout(self, body: dict[str, Any]) -> None:
        grant = self._live(str(body.get("refresh_token")), "refresh_token")
        if grant is not None:
            self.state.revoked |= {grant.refresh_token, grant.access_token}
        self._send(204, None)


class FakeAccountService:
    """``with FakeAccountService() as fake:`` serving at ``fake.base_url``; steer it through ``fake.state``."""

    def __init__(self) -> None:
        self.state = FakeAccountState()
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"state": self.state, "lock": self.lock})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeAccountService:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def tokens(self) -> list[str]:
        """Every token this fake ever issued (for leak checks)."""
        with self.lock:
            return [t for g in self.state.grants for t in (g.access_token, g.refresh_token)]

    def revoke_all(self) -> None:
        with self.lock:
            self.state.revoked |= set(self.tokens_unlocked())

    def tokens_unlocked(self) -> list[str]:
        return [t for g in self.state.grants for t in (g.access_token, g.refresh_token)]
