"""The client's account, provider, sandbox, skills and audit-trust resources against the real server process,
a fake account service and a fake Anthropic (both real HTTP on loopback) and a real sandbox: each method sends
what the server documents and returns its typed model, blocking and asyncio alike."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agent_support import sandbox_workspace, server_env
from fakes.account import FakeAccountService
from fakes.anthropic import FakeAnthropic
from fakes.reply import Reply
from openanalyst_client import AsyncClient, Client, NotFoundError
from openanalyst_client.admin_models import SkillMatch
from openanalyst_client.audit_verify import verify_export
from openanalyst_client.events import StateEvent

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture
def server(serve: Callable[..., Any], fake: FakeAnthropic, account: FakeAccountService, sandbox_image: str,
           tmp_path: Path) -> Any:
    skills = tmp_path / "skills"
    for name, description in (("csv-summary", "Summarise a CSV file's columns and rows."),
                              ("git-changelog", "Write a changelog from the git history.")):
        (skills / name).mkdir(parents=True)
        (skills / name / "SKILL.md").write_text(f"---\nname: {name}\ndescription: {description}\n---\nDo {name}.\n")
    (skills / "broken").mkdir()
    (skills / "broken" / "SKILL.md").write_text("no front matter here\n")
    env = server_env(fake.base_url, sandbox_workspace(tmp_path / "owner-ws"), OPENANALYST_SKILLS_DIRS=str(skills),
                     OPENANALYST_ACCOUNT_SERVICE_URL=account.base_url,
                     OPENANALYST_ALLOW_PRIVATE_PROVIDER_URLS="true",
                     OPENANALYST_AUDIT_CHECKPOINT_EVERY="2")  # a checkpoint after each call
    return serve(env=env)


def test_account_sign_in_status_preference_and_sign_out(server: Any, account: FakeAccountService) -> None:
    """The whole one-time-code flow through the client: the token never comes back, only the state."""
    with Client(server.base, tenant="alice") as oa:
        assert oa.account.status().signed_in is False
        challenge = oa.account.start_sign_in("alice@example.com")
        assert challenge.rate_limited is False and challenge.challenge_id
        status = oa.account.verify("alice@example.com", account.state.outbox["alice@example.com"],
                                   challenge.challenge_id)
        assert status.signed_in and status.email == "alice@example.com"
        assert status.balance is not None and status.balance.plan_name == "Pro"
        assert oa.account.get().plan == "Pro"
        oa.account.prefer("oauth")
        assert oa.account.status().preferred_source == "oauth"
        with Client(server.base, tenant="bob") as other:
            assert other.account.status().signed_in is False  # per tenant
        oa.account.sign_out()
        assert oa.account.status().signed_in is False
    assert account.tokens()  # the sign-in issued tokens: the leak check below has something to look for
    leaked = [t for t in account.tokens() if t in repr(status)]
    assert leaked == []


def test_providers_set_list_status_delete(server: Any) -> None:
    """A stored key is listed masked, its breaker shows, and deleting it leaves the environment's entry."""
    with Client(server.base, tenant="carol") as oa:
        entry = oa.providers.set("openai", api_key="sk-test-0123456789abcdefghij")
        assert entry.name == "openai" and entry.source == "api"
        assert entry.api_key is not None and "0123456789abcdef" not in entry.api_key
        names = {p.name: p.source for p in oa.providers.list().data}
        assert names.get("openai") == "api"
        status = {s.provider: s for s in oa.providers.status().data}
        assert status["openai"].configured and status["openai"].state == "closed"
        oa.providers.delete("openai")
        assert "openai" not in {p.name for p in oa.providers.list().data if p.source == "api"}
        with pytest.raises(NotFoundError):
            oa.providers.delete("openai")


def test_sandbox_info_and_reset(server: Any) -> None:
    """After a call the tenant's container shows as running with its limits; reset removes it and the next
    call starts a fresh one."""
    with Client(server.base, tenant="dave") as oa:
        assert oa.tools.call("bash", {"command": "true"}).exit_code == 0
        info = oa.sandbox.get()
        assert info.tenant == "dave" and info.container_id and info.limits is not None
        oa.sandbox.reset()
        assert oa.sandbox.get().container_id is None
        assert oa.tools.call("bash", {"command": "true"}).exit_code == 0
        assert oa.sandbox.get().container_id not in (None, info.container_id)


def test_skills_list_match_and_run(server: Any, fake: FakeAnthropic) -> None:
    """Skills are listed with the malformed one reported, ranked with scores, and run through the agent loop
    (blocking answer and stream)."""
    fake.script([Reply.text("summarised"), Reply.text("streamed")])
    with Client(server.base, tenant="erin") as oa:
        listed = oa.skills.list()
        assert [s.name for s in listed.data] == ["csv-summary", "git-changelog"]
        assert [p.name for p in listed.problems] == ["broken"]
        matches = oa.skills.match("summarise my csv columns")
        assert isinstance(matches.data[0], SkillMatch) and matches.data[0].name == "csv-summary"
        assert matches.data[0].score > 0
        answer = oa.skills.run("csv-summary", "data.csv")
        assert answer.skills == ["csv-summary"] and answer.message == "summarised"
        events = list(oa.skills.execute_stream(query="changelog from git"))
        assert isinstance(events[-1], StateEvent) and events[-1].state == "idle"
        with pytest.raises(NotFoundError):
            oa.skills.run("no-such-skill")
        with pytest.raises(ValueError):
            oa.skills.execute()


def test_audit_checkpoint_and_inclusion_proof(server: Any, tmp_path: Path) -> None:
    """A checkpoint signs the tenant's tree after its calls, and an inclusion proof ties one record to it."""
    with Client(server.base, tenant="frank") as oa:
        oa.tools.call("bash", {"command": "echo one"})
        exported = oa.audit.export(tmp_path / "frank.jsonl")
        assert verify_export(exported, oa.audit.key()).ok
        record = min(oa.audit.list().data, key=lambda r: r.seq)
        proof = oa.audit_trust.proof(record.seq)
        assert proof.seq == record.seq and proof.record.seq == record.seq and proof.tree_size >= record.seq
        assert oa.audit_trust.checkpoints().data[0].tree_size >= 2
        assert oa.audit_trust.latest_note().split("\n", 1)[0].endswith("/frank")


def test_async_resources_match_the_blocking_ones(server: Any) -> None:
    """The asyncio client's new resources answer the same models."""
    async def run() -> None:
        async with AsyncClient(server.base, tenant="gina") as oa:
            assert (await oa.account.status()).signed_in is False
            assert (await oa.skills.list()).data[0].name == "csv-summary"
            assert (await oa.skills.match("git changelog", limit=1)).data[0].name == "git-changelog"
            providers = await oa.providers.status()
            assert any(s.provider == "anthropic" and s.configured for s in providers.data)
            info = await oa.sandbox.get()
            assert info.tenant == "gina"
    asyncio.run(run())
