"""Builds the services that sit on top of the foundation — policies, sandbox, audit log, providers, tool
dispatch, the agent loop — on the foundation, in the lifespan of ``server.app.build_app``, and returns the
fully wired, typed `Services`.

Order matters only for closing (the reverse): turns stop first (the foundation does that), then the provider
HTTP client, the sandbox manager and the audit log, so the last tool call's `finished` record is written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import httpx

from policies.loader import PolicyError, policy_for
from policies.model import Policy
from server.account.service import AccountCredentials
from server.approvals.setup import wire_approvals
from server.audit.log import AuditLog, CheckpointPolicy, PublishConfig
from server.changes.tracker import ChangeTracker
from server.egress_policies import LivePolicies
from server.egress_wiring import build_egress
from server.environments.setup import wire_environments
from server.files.service import FilesService
from server.jsonlimits import JsonLimits
from server.observability.audit_meter import MeteredAudit
from server.providers.config import RouterConfig
from server.providers.failover import ProviderRouter
from server.providers.guarded_http import guarded_client
from server.providers.pricing import PriceTable
from server.runs.setup import wire_runs
from server.services import Foundation, Services
from server.sessions.agent import AgentLoop
from server.sessions.turns import AgentTurnRunner
from server.settings import Settings
from server.skills.catalog import SkillCatalog
from server.skills.workspace import WorkspaceRoots
from server.tenancy import OWNER_ID
from server.tenant_ids import tenant_name
from server.tools.builtin import default_registry
from server.tools.config_tool import ConfigTool, router_check
from server.tools.dispatch import ToolDispatcher
from server.tools.image_caps import CapsStore, program_probe
from server.tools.image_status import ImageStatus
from server.tools.sandbox_backend import SandboxBackend
from server.tools.skill import SkillTool
from server.tools.web_fetch import network_probe, web_fetch_tool
from server.tools.web_search import web_search_tool
from toolrunner import image
from toolrunner.capacity import default_live_cap
from toolrunner.config import SandboxConfig
from toolrunner.quota import warn_at_start

log = logging.getLogger(__name__)


def tenant_policies(settings: Settings) -> Callable[[str], Policy]:
    """Validate every configured policy now (a bad file stops the start), then resolve per tenant."""
    names = {settings.sandbox_policy, *settings.tenant_policies.values()}
    for name in names:
        policy_for(name)  # raises PolicyError naming the file and field

    warn_at_start(any(policy_for(name).disk_mb is not None for name in names))  # loud if quotas cannot hold

    # Configured by the ids clients send; looked up by the tenant's safe name (server.tenant_ids).
    by_name = {t if t == OWNER_ID else tenant_name(t): p for t, p in settings.tenant_policies.items()}

    live = LivePolicies()  # a policy file's [egress] edits apply without a restart (server/egress_policies.py)

    def resolve(tenant_id: str) -> Policy:
        return live.policy(by_name.get(tenant_id, settings.sandbox_policy))

    return resolve


def check_owner_workspace(settings: Settings) -> None:
    """The owner's workspace is mounted into a container: it must not hold the data directory (audit log,
    its key, stored credentials), nor lie inside it."""
    workspace = settings.owner_workspace.expanduser().resolve()
    data_dir = settings.data_dir.expanduser().resolve()
    if workspace == data_dir or workspace in data_dir.parents or data_dir in workspace.parents:
        raise SystemExit(
            f"invalid owner_workspace {workspace}: it overlaps the data directory {data_dir}, which holds the "
            "audit log and credentials and must never be mounted into a sandbox; start the server from "
            "another directory or set OPENANALYST_OWNER_WORKSPACE")


def sandbox_config(settings: Settings, tag: str) -> SandboxConfig:
    live = settings.sandbox_max_containers or default_live_cap(policy_for(settings.sandbox_policy).memory_mb)
    return SandboxConfig(data_dir=settings.data_dir, image=tag, owner_workspace=settings.owner_workspace,
                         owner_tenant_id=OWNER_ID, idle_timeout_s=settings.sandbox_idle_timeout_s,
                         runtime=settings.sandbox_runtime, extra_labels=settings.sandbox_labels,
                         docker_hosts=settings.docker_hosts,
                         max_live_containers=live,
                         max_stopped_containers=settings.sandbox_max_stopped_containers,
                         owner_workspace_quota=settings.owner_workspace_quota,
                         data_disk_reserve_mb=settings.data_disk_reserve_mb)


def router_config(settings: Settings) -> RouterConfig:
    return RouterConfig(provider_order=settings.provider_order or None, default_models=settings.default_models,
                        max_retries=settings.provider_max_retries,
                        retry_after_cap_s=settings.provider_retry_after_cap_s,
                        connect_timeout_s=settings.provider_connect_timeout_s,
                        read_idle_timeout_s=settings.provider_read_timeout_s,
                        allow_model_substitution=settings.allow_model_substitution)


async def wire(foundation: Foundation) -> Services:
    """Build the integration on ``foundation`` (registering its closers there) and return the whole."""
    settings = foundation.settings
    closers = foundation.closers
    check_owner_workspace(settings)
    try:
        policies = tenant_policies(settings)
    except PolicyError as exc:
        raise SystemExit(f"invalid sandbox policy: {exc}") from None

    audit = AuditLog(settings.data_dir / "audit.db", key_name=settings.audit_key_name,
                     checkpoints=CheckpointPolicy(settings.audit_checkpoint_every,
                                                  settings.audit_checkpoint_interval_s),
                     publish=PublishConfig(command=settings.audit_publish_command or None,
                                           url=settings.audit_publish_url))
    try:
        await audit.open()
    except ValueError as exc:  # SigningKeyError, KeyFileError: a key file that is not ours to guess about
        raise SystemExit(f"cannot open the audit log: {exc}") from None
    closers.append(audit.close)

    metrics = foundation.metrics
    status = ImageStatus(on_build=metrics.image_build)
    egress = build_egress(settings, policies, audit)  # allowlist tenants' way out, and the web tools'
    closers.append(egress.close)  # closed after the sandbox (closers run in reverse)
    sandbox = SandboxBackend(partial(sandbox_config, settings), partial(image.ensure_default_image, status.progress),
                             policies, image_status=status, egress=egress,
                             caps_store=CapsStore(settings.data_dir / "image-caps.json"))
    sandbox.start()
    closers.append(sandbox.close)

    # Adapters set per-request connect and read-idle timeouts; this default only bounds what they do not.
    http = httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=10.0), limits=httpx.Limits(max_connections=200))
    closers.append(http.aclose)
    # Tenants' own credentials go through a client that checks every address it connects to.
    tenant_http = guarded_client(settings.provider_url_policy())
    closers.append(tenant_http.aclose)
    # The openanalyst provider's credential is the tenant's sign-in or manual key, by its preferred source.
    lookup = AccountCredentials(foundation.credentials, foundation.account)
    router = ProviderRouter(router_config(settings), http, lookup, tenant_client=tenant_http,
                            trusted_tenants={OWNER_ID})
    router.observe = metrics.provider_attempt

    registry = default_registry()
    registry.add(web_fetch_tool(egress.route_for))
    registry.add(web_search_tool(egress.search))
    registry.set_probe("powershell", program_probe(sandbox.caps, "pwsh"))  # offered where the image has pwsh
    registry.set_probe("web_fetch", network_probe(policies))  # offered where the policy gives a way out
    registry.add(ConfigTool(policies, router_check(router), settings.max_output_tokens).definition())
    files = FilesService(sandbox, audit, policies)  # docs/files.md
    skills = SkillCatalog(settings.skills_dirs, WorkspaceRoots(settings, sandbox))
    skill_tool = SkillTool(skills)
    registry.add(skill_tool.definition())
    audit_sink = MeteredAudit(audit, metrics, lambda name: any(t.name == name for t in registry.all()))
    dispatcher = ToolDispatcher(registry, sandbox, audit_sink, policies,
                                JsonLimits(settings.max_json_depth, settings.max_json_items), egress.calls)
    skill_tool.dispatcher = dispatcher  # loading a server skill copies its files with audited write_file calls
    dispatcher.changes = files.changes = ChangeTracker(sandbox, audit, policies)  # docs/changes.md
    closers.append(dispatcher.changes.close)
    agent = AgentLoop(router, dispatcher, PriceTable(settings.provider_prices),
                      max_output_tokens=settings.max_output_tokens)
    runner = AgentTurnRunner(agent, foundation.sessions, foundation.events, max_turns=settings.max_turns)
    foundation.set_turn_runner(runner)
    # tenants' own images; each call asks which one (docs/environments.md)
    environments = wire_environments(foundation, sandbox)
    # always_ask tool calls wait for a person (docs/approvals.md)
    approvals = await wire_approvals(foundation, dispatcher)
    # runs for CI with signed webhooks (docs/runs.md)
    runs = await wire_runs(foundation, sandbox, environments)
    return Services.on(foundation, audit=audit, router=router, sandbox_backend=sandbox, dispatcher=dispatcher,
                       agent=agent, session_context=runner.context, skills=skills, files=files,
                       approvals=approvals, runs=runs, environments=environments)

