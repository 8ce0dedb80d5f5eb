"""The OpenAnalyst account sign-in end to end (issue 10 point 2): the server as a real process, a fake
account service and a fake OpenAnalyst inference endpoint (Anthropic wire) over real HTTP, a real sandbox.

The token must reach the inference endpoint and nothing else: not a response, not the server's log, not the
data directory (database sealed, audit log, workspaces), not a sandbox's environment or files."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_support import read_until_idle, sandbox_workspace
from fakes.account import FakeAccountService
from fakes.anthropic import FakeAnthropic
from fakes.reply import Reply

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ALICE = {"X-Tenant-ID": "alice"}
BOB = {"X-Tenant-ID": "bob"}
MANUAL_KEY = "sk-oa-v1-manual-0123456789abcdef"
SIGNED_OUT = {"signed_in": False, "email": None, "expires_at": None, "balance": None}


@pytest.fixture
def account() -> Iterator[FakeAccountService]:
    with FakeAccountService() as fake:
        yield fake


@pytest.fixture
def inference() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


class Server:
    """The server process plus every response body it sent, for the leak check."""

    def __init__(self, process: Any) -> None:
        self.process = process
        self.base = process.base
        self.seen: list[str] = []

    def call(self, method: str, path: str, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        resp = httpx.request(method, self.base + path, headers=headers or ALICE, timeout=60, **kw)
        self.seen.append(f"{resp.headers}\n{resp.text}")
        return resp

    def sign_in(self, account: FakeAccountService, email: str = "alice@example.com",
                headers: dict[str, str] | None = None) -> dict[str, Any]:
        start = self.call("POST", "/me/auth/otp/start", headers, json={"email": email})
        assert start.status_code == 200, start.text
        verify = self.call("POST", "/me/auth/otp/verify", headers, json={
            "email": email, "code": account.state.outbox[email], "challenge_id": start.json()["challenge_id"]})
        assert verify.status_code == 200, verify.text
        body: dict[str, Any] = verify.json()
        return body

    def chat(self, text: str = "hi", headers: dict[str, str] | None = None) -> httpx.Response:
        return self.call("POST", "/v1/chat", headers, json={"message": text, "stream": False})


@pytest.fixture
def server(serve: Callable[..., Any], account: FakeAccountService, inference: FakeAnthropic,
           tmp_path: Path) -> Iterator[Server]:
    process = serve(env={"OPENANALYST_ACCOUNT_SERVICE_URL": account.base_url,
                         "OPENANALYST_BASE_URL": inference.base_url, "OPENANALYST_LOG_LEVEL": "debug",
                         "OPENANALYST_ALLOW_PRIVATE_PROVIDER_URLS": "true",  # the manual key's fake is on loopback
                         "OPENANALYST_OWNER_WORKSPACE": str(sandbox_workspace(tmp_path / "owner-ws"))})
    yield Server(process)
    if process.proc.poll() is None:
        assert process.stop() == 0


def assert_no_token_anywhere(server: Server, account: FakeAccountService) -> None:
    """No issued token in any response, the server's output, or any file of the data directory."""
    tokens = account.tokens()
    assert tokens, "the test issued no token"
    text = "\n".join(server.seen) + "\n" + "\n".join(server.process.output)
    assert "FAKEACCT" not in text, text[max(0, text.find("FAKEACCT") - 300):text.find("FAKEACCT") + 100]
    for path in server.process.data_dir.rglob("*"):
        if path.is_file():
            assert b"FAKEACCT" not in path.read_bytes(), path


def test_whole_flow_status_account_inference_logout(server: Server, account: FakeAccountService,
                                                     inference: FakeAnthropic) -> None:
    """Signed out → OTP start (spec shape) → a wrong code → verify → status with balance → inference carries
    the token as a Bearer → logout (204) → signed out; the token shows up nowhere but the inference call."""
    assert server.call("GET", "/me/auth/status").json() == {
        **SIGNED_OUT, "manual_key_present": False, "preferred_source": "manual"}
    start = server.call("POST", "/me/auth/otp/start", json={"email": "alice@example.com"})
    assert start.status_code == 200
    challenge = start.json()
    assert challenge["challenge_id"].startswith("chl_") and challenge["rate_limited"] is False
    assert challenge["code_delivery"] == {"destination": "a***@example.com", "delivery_medium": "EMAIL"}
    assert challenge["retry_after_seconds"] is None and challenge["expires_at"] > 1_700_000_000_000
    code = account.state.outbox["alice@example.com"]
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    bad = server.call("POST", "/me/auth/otp/verify",
                      json={"email": "alice@example.com", "code": wrong, "challenge_id": challenge["challenge_id"]})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "OTP_INVALID"
    assert server.call("POST", "/me/auth/otp/verify", json={"email": "alice@example.com", "code": "12ab56",
                                                           "challenge_id": "x"}).status_code == 422

    verify = server.call("POST", "/me/auth/otp/verify", json={
        "email": "alice@example.com", "code": code, "challenge_id": challenge["challenge_id"]})
    assert verify.status_code == 200
    status = verify.json()
    assert status["signed_in"] is True and status["email"] == "alice@example.com"
    assert status["expires_at"].endswith("Z") and status["preferred_source"] == "oauth"
    assert status["balance"] == {"plan_name": "Pro", "plan_limit": 1000, "plan_used": 142, "plan_remaining": 858,
                                 "purchases_total": 0, "purchases_remaining": 0, "total_available": 858}
    assert server.call("GET", "/me/auth/status").json() == status
    assert server.call("GET", "/api/ai/account").json() == {
        "signed_in": True, "email": "alice@example.com", "plan": "Pro", "credits": 858, "balance": 858}
    # Another tenant is not signed in by alice's sign-in.
    assert server.call("GET", "/me/auth/status", BOB).json()["signed_in"] is False
    assert server.call("GET", "/api/ai/account", BOB).json() == {
        "signed_in": False, "email": None, "plan": None, "credits": None, "balance": None}

    inference.script([Reply.text("Hello from OpenAnalyst.")])
    answer = server.chat()
    assert answer.status_code == 200, answer.text
    assert answer.json()["message"] == "Hello from OpenAnalyst."
    assert answer.json()["usage"]["provider"] == "openanalyst"
    sent = inference.requests[-1].headers
    assert sent["authorization"] == f"Bearer {account.state.grants[-1].access_token}"
    assert "x-api-key" not in sent
    no_provider = server.chat(headers=BOB)
    assert no_provider.status_code == 503 and no_provider.json()["error"]["code"] == "NO_PROVIDER_CONFIGURED"

    refresh_token = account.state.grants[-1].refresh_token
    out = server.call("POST", "/me/auth/logout")
    assert out.status_code == 204 and out.content == b""
    assert refresh_token in account.state.revoked  # the service was told
    assert server.call("GET", "/me/auth/status").json() == {
        **SIGNED_OUT, "manual_key_present": False, "preferred_source": "manual"}
    assert server.chat().json()["error"]["code"] == "NO_PROVIDER_CONFIGURED"
    assert_no_token_anywhere(server, account)


def test_preferred_source_and_manual_key_kept(server: Server, account: FakeAccountService,
                                              inference: FakeAnthropic) -> None:
    """With both a sign-in and a manual key, the preferred source picks the credential; logout keeps the key."""
    manual = {"api_key": MANUAL_KEY, "base_url": inference.base_url}
    assert server.call("PUT", "/me/providers/openanalyst", json=manual).status_code == 200
    assert server.call("GET", "/me/auth/status").json()["manual_key_present"] is True
    server.sign_in(account)
    inference.default = Reply.text("ok")

    server.chat()
    assert inference.requests[-1].headers["authorization"].startswith("Bearer oat_FAKEACCT")
    for bad in ({"source": "both"}, {}, {"source": "oauth", "x": 1}):
        assert server.call("PUT", "/me/providers/openanalyst/preferred-source", json=bad).status_code == 422
    chosen = server.call("PUT", "/me/providers/openanalyst/preferred-source", json={"source": "manual"})
    assert chosen.status_code == 204 and chosen.content == b""
    assert server.call("GET", "/me/auth/status").json()["preferred_source"] == "manual"
    server.chat()
    assert inference.requests[-1].headers["x-api-key"] == MANUAL_KEY
    assert "authorization" not in inference.requests[-1].headers
    assert server.call("PUT", "/me/providers/openanalyst/preferred-source",
                       json={"source": "oauth"}).status_code == 204
    server.chat()
    assert inference.requests[-1].headers["authorization"].startswith("Bearer oat_FAKEACCT")

    assert server.call("POST", "/me/auth/logout").status_code == 204
    status = server.call("GET", "/me/auth/status").json()
    assert status["signed_in"] is False and status["manual_key_present"] is True
    listed = server.call("GET", "/me/providers").json()["data"]
    assert [p["name"] for p in listed] == ["openanalyst"] and listed[0]["api_key"] == "****" + MANUAL_KEY[-4:]
    server.chat()  # the preferred source is gone: the manual key answers
    assert inference.requests[-1].headers["x-api-key"] == MANUAL_KEY
    assert_no_token_anywhere(server, account)


def test_refresh_within_60_s_of_expiry(server: Server, account: FakeAccountService,
                                       inference: FakeAnthropic) -> None:
    """A token that expires within 60 s is refreshed before status answers and before inference uses it."""
    account.state.token_ttl_s = 30.0  # every token issued is already inside the refresh window
    first = server.sign_in(account)
    assert first["signed_in"] is True  # verify answered as status: one refresh already happened
    assert account.state.refreshes == 1
    server.call("GET", "/me/auth/status")
    assert account.state.refreshes == 2
    account.state.token_ttl_s = 3600.0
    server.call("GET", "/me/auth/status")  # refreshed with a long-lived token this time
    assert account.state.refreshes == 3
    latest = account.state.grants[-1]
    assert server.call("GET", "/me/auth/status").json()["signed_in"] is True
    assert account.state.refreshes == 3  # an hour left: no refresh
    inference.script([Reply.text("fresh")])
    assert server.chat().status_code == 200
    assert inference.requests[-1].headers["authorization"] == f"Bearer {latest.access_token}"
    assert all(g.access_token in account.state.revoked for g in account.state.grants[:-1])
    assert_no_token_anywhere(server, account)


def test_revoked_token_signs_out(server: Server, account: FakeAccountService) -> None:
    """A revoked sign-in (access and refresh refused) reads as signed out, and the sealed token is wiped."""
    server.sign_in(account)
    account.revoke_all()
    status = server.call("GET", "/me/auth/status").json()
    assert status == {**SIGNED_OUT, "manual_key_present": False, "preferred_source": "manual"}
    assert server.chat().json()["error"]["code"] == "NO_PROVIDER_CONFIGURED"
    assert any("refused the refresh token" in line for line in server.process.output)
    assert_no_token_anywhere(server, account)


def test_rate_limits_and_expiry(server: Server, account: FakeAccountService) -> None:
    """start rate-limited → rate_limited + retry_after_seconds (nothing sent); too many wrong codes → 429 with
    Retry-After; an expired challenge → OTP_EXPIRED; an unknown one → OTP_CHALLENGE_UNKNOWN."""
    account.state.rate_limit_start_s = 42
    limited = server.call("POST", "/me/auth/otp/start", json={"email": "alice@example.com"})
    assert limited.status_code == 200
    assert limited.json() == {"challenge_id": None, "code_delivery": None, "expires_at": None,
                              "rate_limited": True, "retry_after_seconds": 42}
    assert "alice@example.com" not in account.state.outbox

    challenge = server.call("POST", "/me/auth/otp/start", json={"email": "alice@example.com"}).json()
    code = account.state.outbox["alice@example.com"]
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    body = {"email": "alice@example.com", "code": wrong, "challenge_id": challenge["challenge_id"]}
    codes = [server.call("POST", "/me/auth/otp/verify", json=body).json()["error"]["code"] for _ in range(3)]
    assert codes == ["OTP_INVALID"] * 3
    blocked = server.call("POST", "/me/auth/otp/verify", json={**body, "code": code})
    assert blocked.status_code == 429 and blocked.json()["error"]["code"] == "OTP_RATE_LIMITED"
    assert blocked.headers["retry-after"] == "30"

    account.state.challenge_ttl_s = -1.0
    old = server.call("POST", "/me/auth/otp/start", json={"email": "alice@example.com"}).json()
    expired = server.call("POST", "/me/auth/otp/verify", json={
        "email": "alice@example.com", "code": account.state.outbox["alice@example.com"],
        "challenge_id": old["challenge_id"]})
    assert expired.status_code == 400 and expired.json()["error"]["code"] == "OTP_EXPIRED"
    unknown = server.call("POST", "/me/auth/otp/verify",
                          json={"email": "alice@example.com", "code": "123456", "challenge_id": "chl_nope"})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "OTP_CHALLENGE_UNKNOWN"
    assert server.call("GET", "/me/auth/status").json()["signed_in"] is False


@pytest.mark.docker
def test_token_never_inside_the_sandbox(server: Server, account: FakeAccountService, inference: FakeAnthropic,
                                        sandbox_image: str) -> None:
    """Signed in, the model runs bash in the tenant's sandbox: its environment and readable files hold no
    token; the audit log of the call does not either."""
    server.sign_in(account)
    # /tmp/control holds the marker on purpose: the search must find it (and only it), so it does search.
    probe = ("env; printf 'FAKE%s' ACCT > /tmp/control; for d in /workspace /tmp /home /etc /run /root /proc/self; "
             "do grep -rIl FAKE''ACCT $d 2>/dev/null; done; rm /tmp/control; echo probe-done")
    inference.script([Reply.tool_call("bash", {"command": probe}), Reply.text("checked")])
    session = server.call("POST", "/sessions").json()["session_id"]
    with httpx.stream("POST", f"{server.base}/sessions/{session}/message", json={"message": "look around"},
                      headers=ALICE, timeout=120) as response:
        assert response.status_code == 200
        events = read_until_idle(response)
    server.seen.append(json.dumps(events))
    result = next(d for k, d, _ in events if k == "tool_result")
    assert "probe-done" in result["output"] and "PATH=" in result["output"]
    assert "FAKEACCT" not in result["output"]
    found = result["output"].split("PATH=", 1)[1].splitlines()[1:]
    assert [line for line in found if line.startswith("/")] == ["/tmp/control"], result["output"]
    usage = next(d for k, d, _ in events if k == "usage")
    assert usage["provider"] == "openanalyst"
    audit = server.call("GET", "/v1/audit", params={"session_id": session})
    assert [r["tool"] for r in audit.json()["data"]] == ["bash", "bash"]
    assert all(r.headers["authorization"].startswith("Bearer oat_FAKEACCT") for r in inference.requests)
    assert_no_token_anywhere(server, account)


def test_account_service_unset_names_the_setting(serve: Callable[..., Any]) -> None:
    """Without the setting the status still answers (signed out); starting a sign-in says what to set."""
    process = serve()
    assert httpx.get(process.base + "/me/auth/status").json()["signed_in"] is False
    resp = httpx.post(process.base + "/me/auth/otp/start", json={"email": "a@b.c"})
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "ACCOUNT_SERVICE_NOT_CONFIGURED"
    assert "OPENANALYST_ACCOUNT_SERVICE_URL" in resp.json()["error"]["message"]


def test_account_service_down_keeps_a_valid_sign_in(server: Server, account: FakeAccountService,
                                                   inference: FakeAnthropic) -> None:
    """The account service going away does not sign anyone out nor fail inference while the token is valid:
    status answers signed in with the balance unknown (null)."""
    server.sign_in(account)
    token = account.state.grants[-1].access_token
    account.state.down = True
    status = server.call("GET", "/me/auth/status")
    assert status.status_code == 200
    assert status.json()["signed_in"] is True and status.json()["balance"] is None
    assert server.call("GET", "/api/ai/account").json()["credits"] is None
    inference.script([Reply.text("still works")])
    assert server.chat().json()["message"] == "still works"
    assert inference.requests[-1].headers["authorization"] == f"Bearer {token}"
    start = server.call("POST", "/me/auth/otp/start", json={"email": "bob@example.com"})
    assert start.status_code == 502 and start.json()["error"]["code"] == "ACCOUNT_SERVICE_UNAVAILABLE"
    assert_no_token_anywhere(server, account)


def test_expired_token_with_the_service_down(server: Server, account: FakeAccountService) -> None:
    """An expired token that cannot be refreshed: status says the service failed (502, not signed out: the
    sign-in may recover), and inference does not use the dead token."""
    account.state.token_ttl_s = -1.0  # every token is issued already expired
    server.sign_in(account)
    account.state.down = True
    status = server.call("GET", "/me/auth/status")
    assert status.status_code == 502 and status.json()["error"]["code"] == "ACCOUNT_SERVICE_UNAVAILABLE"
    assert server.chat().json()["error"]["code"] == "NO_PROVIDER_CONFIGURED"
    account.state.down = False
    assert server.call("GET", "/me/auth/status").json()["signed_in"] is True  # refreshed once it is back
    assert_no_token_anywhere(server, account)


def test_signed_in_model_is_listed_by_v1_models(server: Server, account: FakeAccountService) -> None:
    """The OpenAI-compatible model list sees the sign-in as turns do: openanalyst's model is listed."""
    before = {m["id"]: m["owned_by"] for m in server.call("GET", "/v1/models").json()["data"]}
    assert before == {"default": "openanalyst"}
    server.sign_in(account)
    after = {m["id"]: m["owned_by"] for m in server.call("GET", "/v1/models").json()["data"]}
    assert after == {"default": "openanalyst", "claude-sonnet-4-5": "openanalyst"}
    assert_no_token_anywhere(server, account)
