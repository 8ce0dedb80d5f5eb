"""Server configuration: the one class that reads the environment.

Server options use the ``OPENANALYST_`` prefix; provider keys and endpoints are read from the names their
official SDKs use (``ANTHROPIC_API_KEY``, ``OPENAI_BASE_URL`` …), so a machine that already works with those
SDKs works here unchanged. Invalid values stop the start with pydantic's message naming the setting.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from server.providers.addresses import UrlPolicy
from server.providers.registry import PROVIDERS
from server.tenant_ids import HEADER_RE
from toolrunner.engine_list import engines_from_environment
from toolrunner.engines import EngineAddressError


def _alias(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Every knob of the server; build one per app (tests pass their own, nothing is global)."""

    model_config = SettingsConfigDict(env_prefix="OPENANALYST_", extra="ignore", populate_by_name=True)

    # --- server core -------------------------------------------------------------------------------------
    data_dir: Path = Field(default=Path("~/.openanalyst/server"),
                           description="Where server.db, audit.db, the key file and workspaces live.")
    database_url: SecretStr | None = Field(
        default=None, description="postgresql://user:password@host/db: keep the server's state in PostgreSQL "
                                  "(docs/scale-out.md section 3); unset: SQLite in the data directory.")
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=3080, ge=0, le=65535)
    tenancy: Literal["header", "single"] = Field(
        default="header",
        description="header: X-Tenant-ID selects a tenant (absent = owner); single: the header is refused.")
    require_api_key: bool = Field(default=False, description="Every request but /health needs a Bearer key.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*"], description="Comma-separated or JSON list; '*' = any origin.")
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    # --- request limits (docs/request-limits.md) ----------------------------------------------------------
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024,
                                  description="Request line + headers; past it: 431 and the connection closed.")
    max_headers: int = Field(default=100, ge=8, le=10_000, description="Header fields per request (431).")
    max_json_depth: int = Field(default=64, ge=4, le=512, description="Nesting of any JSON body or tool input.")
    max_json_items: int = Field(default=100_000, ge=100, le=10_000_000,
                                description="Values and keys in a JSON body or tool input.")
    http_head_timeout_s: float = Field(default=10.0, gt=0, le=3600,
                                       description="A request line + headers must arrive within this (408).")
    http_idle_timeout_s: float = Field(default=5.0, gt=0, le=3600,
                                       description="A connection sending nothing (before or between requests) "
                                                   "is closed after this.")
    max_connections: int | None = Field(default=None, ge=1, le=10_000_000,
                                        description="Open connections; past it a new one gets 503 "
                                                    "TOO_MANY_CONNECTIONS (default: from the fd limit).")
    max_session_metadata_bytes: int = Field(default=16 * 1024, ge=256, le=16 * 1024 * 1024,
                                            description="A session's metadata as compact JSON (422).")
    max_sessions_per_tenant: int = Field(default=10_000, ge=1, le=10_000_000,
                                         description="Sessions a tenant may keep (409 SESSION_LIMIT_REACHED).")
    sse_keepalive_s: float = Field(default=15.0, gt=0, le=3600)
    sse_queue_events: int = Field(default=10_000, ge=8, le=1_000_000,
                                  description="Events buffered per live subscriber before it is dropped.")
    share_env_providers_with_tenants: bool = Field(
        default=True, description="Tenants other than the owner may use the host's env provider keys.")
    enable_test_hooks: bool = Field(default=False, description="Internal event-append hook for bench/tests.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    log_format: Literal["text", "json"] = Field(
        default="text", description="text: time, level, logger, [request id], message; json: one object a line.")
    access_log: bool = Field(default=True, description="Uvicorn's access line per request (at level info).")
    metrics_access: Literal["owner", "any", "off"] = Field(
        default="owner", description="Who may read GET /metrics: the owner only, any caller the API accepts (with "
                                     "require_api_key: any valid key), or nobody (404). docs/operations.md")

    # --- provider credentials (their usual variable names, no prefix) -------------------------------------
    anthropic_api_key: SecretStr | None = Field(default=None, validation_alias=_alias("ANTHROPIC_API_KEY"))
    openai_api_key: SecretStr | None = Field(default=None, validation_alias=_alias("OPENAI_API_KEY"))
    gemini_api_key: SecretStr | None = Field(
        default=None, validation_alias=_alias("GEMINI_API_KEY", "GOOGLE_API_KEY"))
    xai_api_key: SecretStr | None = Field(default=None, validation_alias=_alias("XAI_API_KEY"))
    openrouter_api_key: SecretStr | None = Field(default=None, validation_alias=_alias("OPENROUTER_API_KEY"))
    openanalyst_api_key: SecretStr | None = Field(
        default=None, validation_alias=_alias("OPENANALYST_API_KEY"))
    aws_access_key_id: SecretStr | None = Field(default=None, validation_alias=_alias("AWS_ACCESS_KEY_ID"))
    aws_secret_access_key: SecretStr | None = Field(
        default=None, validation_alias=_alias("AWS_SECRET_ACCESS_KEY"))
    aws_session_token: SecretStr | None = Field(default=None, validation_alias=_alias("AWS_SESSION_TOKEN"))
    aws_region: str | None = Field(default=None, validation_alias=_alias("AWS_REGION", "AWS_DEFAULT_REGION"))
    aws_bearer_token_bedrock: SecretStr | None = Field(
        default=None, validation_alias=_alias("AWS_BEARER_TOKEN_BEDROCK"))
    ollama_host: str | None = Field(default=None, validation_alias=_alias("OLLAMA_HOST"))

    # Base-URL overrides, SDK conventions: Anthropic's base has no /v1, OpenAI-compatible ones end in /v1.
    anthropic_base_url: str | None = Field(default=None, validation_alias=_alias("ANTHROPIC_BASE_URL"))
    openai_base_url: str | None = Field(default=None, validation_alias=_alias("OPENAI_BASE_URL"))
    xai_base_url: str | None = Field(default=None, validation_alias=_alias("XAI_BASE_URL"))
    openrouter_base_url: str | None = Field(default=None, validation_alias=_alias("OPENROUTER_BASE_URL"))
    gemini_base_url: str | None = Field(default=None, validation_alias=_alias("GEMINI_BASE_URL"))
    bedrock_base_url: str | None = Field(default=None, validation_alias=_alias("BEDROCK_BASE_URL"))
    openanalyst_base_url: str | None = Field(default=None, validation_alias=_alias("OPENANALYST_BASE_URL"))
    account_service_url: str | None = Field(
        default=None, description="The OpenAnalyst account service the email + OTP sign-in talks to "
                                  "(OPENANALYST_ACCOUNT_SERVICE_URL; docs/account.md); unset: sign-in is refused.")

    # --- sandbox and agent (the integrator extends this section) -----------------------------------------
    owner_workspace: Path = Field(default_factory=Path.cwd, description="The owner's tools work here.")
    owner_workspace_quota: bool = Field(
        default=False, description="Enforce the policy's disk quota on the owner's workspace too (a loop-mounted "
                                   "filesystem over it, its files moved in); off: a person's directory is exempt.")
    sandbox_policy: str = Field(default="default", min_length=1, description="Policy preset for tenants.")
    tenant_policies: dict[str, str] = Field(default_factory=dict, description="Per-tenant policy preset.")
    sandbox_idle_timeout_s: float = Field(default=1800.0, gt=0)
    sandbox_max_containers: int | None = Field(
        default=None, ge=1, le=4096,
        description="Tenant containers running at once (the owner's is not counted); at the cap the least "
                    "recently used idle one is stopped, else 503 SANDBOX_CAPACITY. Default: as many as fill "
                    "half the host's memory at the default policy's memory limit.")
    sandbox_max_stopped_containers: int = Field(
        default=64, ge=0, le=4096, description="Stopped containers kept for a quick restart (workspaces stay).")
    data_disk_reserve_mb: int | None = Field(
        default=None, ge=0, le=1 << 30,
        description="Free space a new tenant's workspace quota image must leave on the data disk once full, "
                    "else 503 SANDBOX_DISK_FULL. Default: max(5 % of the disk, 2 GiB); 0: no check.")
    sandbox_runtime: Literal["runc", "runsc"] | None = None
    docker_hosts: str | None = Field(
        default=None, description="Engines to spread tenants' sandboxes over: comma-separated entries, each an "
                                  "address (unix://, tcp:// with tls=DIR, ssh://) with optional capacity=N "
                                  "(docs/scale-out.md). Unset: DOCKER_HOST, else the local socket.")
    environment_pip_index_url: str | None = Field(
        default=None, description="Index the host downloads environments' Python wheels from (default: pip's own "
                                  "configuration, e.g. PIP_INDEX_URL).")
    environment_npm_registry: str | None = Field(
        default=None, description="Registry the host fetches environments' npm packages from (default: npm's own "
                                  "configuration, e.g. NPM_CONFIG_REGISTRY).")
    max_environments_per_tenant: int = Field(default=50, ge=1, le=10_000)
    max_environment_builds_per_tenant: int = Field(default=2, ge=1, le=100,
                                                   description="New environment builds a tenant may have queued or "
                                                               "running (429 ENVIRONMENT_BUILDS_BUSY).")
    sandbox_labels: dict[str, str] = Field(default_factory=dict,
                                           description="Extra labels on sandbox containers (e.g. for tests).")
    provider_order: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Failover order, comma-separated or a JSON list (default: by model).")
    default_models: dict[str, str] = Field(default_factory=dict, description="Per-provider default model.")
    allow_model_substitution: bool = Field(
        default=False, description="A requested model that no configured provider serves is answered by another "
                                   "provider's default model (the answer's usage names it); off: 400 "
                                   "MODEL_NOT_AVAILABLE instead of another vendor's model.")
    provider_max_retries: int = Field(default=2, ge=0, le=10, description="Retries on one provider first.")
    provider_retry_after_cap_s: float = Field(default=30.0, ge=0,
                                              description="Longest Retry-After waited; longer: next provider.")
    provider_connect_timeout_s: float = Field(default=10.0, gt=0)
    provider_read_timeout_s: float = Field(default=120.0, gt=0, description="Longest silence inside a stream.")
    allow_private_provider_urls: bool = Field(
        default=False, description="Tenants' provider base URLs may reach private, loopback and link-local "
                                   "addresses (the owner's and the environment's URLs always may).")
    provider_url_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Hosts, IPs or CIDRs tenants' provider base URLs may reach although "
                                          "not public; comma-separated or a JSON list.")
    provider_prices: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="USD per million (input, output) tokens by model, over the defaults.")
    max_turns: int = Field(default=25, ge=1, le=1000)
    max_active_runs_per_tenant: int = Field(default=100, ge=1, le=100_000,
                                            description="Runs a tenant may have queued or running at once "
                                                        "(429 RUN_LIMIT_REACHED).")
    # Runs' webhooks (docs/runs.md): attempts per outcome, and the first back-off (doubled after each failure).
    webhook_max_attempts: int = Field(default=5, ge=1, le=20)
    webhook_retry_first_delay_s: float = Field(default=1.0, gt=0, le=3600)
    skills_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="The server's skills directories (each holds <name>/SKILL.md), comma-"
                                          "separated or a JSON list; earlier ones win on a name clash. Tenants "
                                          "add their own in <workspace>/.openanalyst/skills/ (docs/skills.md).")
    max_output_tokens: int = Field(default=8192, ge=1, le=1_000_000, description="Per model turn.")

    # --- audit signatures and checkpoints (docs/audit-signing.md) ----------------------------------------
    audit_key_name: str = Field(default="openanalyst-audit", pattern=r"^[^\s+]{1,200}$",
                                description="Signed-note key name; a tenant's log origin is <name>/<tenant>.")
    audit_checkpoint_every: int = Field(default=1000, ge=1, le=10_000_000,
                                        description="Write a signed checkpoint every N records of a tenant.")
    audit_checkpoint_interval_s: float = Field(default=60.0, gt=0, le=86_400,
                                               description="...or this long after a tenant's log last grew.")
    audit_publish_command: str | None = Field(
        default=None, description="Run with each checkpoint on stdin (shlex-split, no shell); retried on failure.")
    audit_publish_url: str | None = Field(default=None, description="POST each checkpoint here (text/plain).")

    # --- egress and the web tools (docs/egress.md) -----------------------------------------------------------
    egress_private_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Networks (CIDRs) the egress proxy may reach although not public, e.g. "
                                          "a local mirror; comma-separated or a JSON list. Never the metadata address.")
    egress_socket_dir: Path | None = Field(
        default=None, description="Where the egress proxy's per-tenant sockets live (default: a new directory "
                                  "under the system's temp dir; never inside the data directory).")
    web_search_searxng_url: str | None = Field(default=None, description="A SearXNG instance for web_search.")
    web_search_api_key: SecretStr | None = Field(default=None, description="Bearer key for the search backend.")

    @field_validator("provider_order", mode="before")
    @classmethod
    def _order(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else [p.strip() for p in text.split(",") if p.strip()]
        if isinstance(value, list):
            unknown = [p for p in value if p not in PROVIDERS]
            if unknown:
                raise ValueError(f"unknown provider(s) {unknown}; known: {', '.join(PROVIDERS)}")
        return value

    @field_validator("provider_url_allowlist", "egress_private_networks", "skills_dirs", mode="before")
    @classmethod
    def _allowlist(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [p.strip() for p in text.split(",") if p.strip()]
        return value

    @field_validator("provider_url_allowlist")
    @classmethod
    def _allowlist_entries(cls, entries: list[str]) -> list[str]:
        UrlPolicy.parse(False, entries)  # a malformed entry stops the start, naming it
        return entries

    @field_validator("docker_hosts")
    @classmethod
    def _docker_hosts(cls, value: str | None) -> str | None:
        if value is not None and value.strip():  # every entry checked now: a bad one stops the start, named
            try:
                engines_from_environment(value, os.environ)
            except EngineAddressError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("egress_private_networks")
    @classmethod
    def _egress_networks(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError as exc:
                raise ValueError(f"egress_private_networks: {entry!r} is not an address or CIDR") from exc
        return entries

    def provider_url_policy(self) -> UrlPolicy:
        """What tenants' provider URLs may reach (``server.providers.urlguard``)."""
        return UrlPolicy.parse(self.allow_private_provider_urls, self.provider_url_allowlist)

    @field_validator("database_url")
    @classmethod
    def _postgresql_only(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value() and not value.get_secret_value().startswith(
                ("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL (unset for SQLite in the data directory)")
        return value

    @field_validator("data_dir", "owner_workspace")
    @classmethod
    def _expand(cls, path: Path) -> Path:
        return path.expanduser().resolve()

    @field_validator("anthropic_base_url", "openai_base_url", "xai_base_url", "openrouter_base_url",
                     "gemini_base_url", "bedrock_base_url", "openanalyst_base_url",
                     "account_service_url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        if url is None or url == "":
            return None
        if not re.match(r"^https?://[^\s/]+", url):
            raise ValueError("must be an http(s) URL")
        return url.rstrip("/")

    @field_validator("audit_publish_url")
    @classmethod
    def _publish_url(cls, url: str | None) -> str | None:
        if url is None or url == "":
            return None
        if not re.match(r"^https?://[^\s/]+", url):
            raise ValueError("must be an http(s) URL")
        return url

    @field_validator("tenant_policies")
    @classmethod
    def _tenant_ids(cls, policies: dict[str, str]) -> dict[str, str]:
        bad = [t for t in policies if t != "owner" and not HEADER_RE.fullmatch(t)]  # mapped in server.wiring
        if bad:
            raise ValueError(f"invalid tenant id(s) {bad}")
        return policies

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [o.strip() for o in text.split(",") if o.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        bad = [o for o in origins if o != "*" and not re.match(r"^https?://[^\s/]+$", o)]
        if bad:
            raise ValueError(f"origin(s) {bad} must be '*' or scheme://host[:port] without a path")
        return origins

    def provider_warnings(self) -> list[str]:
        """What the environment configures only in part: Bedrock is then left out (and said so at start)
        rather than refusing to start, since AWS variables are often set for other tools."""
        if self.aws_bearer_token_bedrock is not None:
            return []
        has_id, has_secret = self.aws_access_key_id is not None, self.aws_secret_access_key is not None
        if has_id == has_secret and (has_id or self.aws_session_token is None):
            return []
        missing = ("AWS_SECRET_ACCESS_KEY" if has_id else "AWS_ACCESS_KEY_ID" if has_secret
                   else "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        present = ("AWS_ACCESS_KEY_ID" if has_id else "AWS_SECRET_ACCESS_KEY" if has_secret
                   else "AWS_SESSION_TOKEN")
        return [f"Bedrock is disabled: {present} is set but {missing} is not; set {missing} (or "
                f"AWS_BEARER_TOKEN_BEDROCK) to use Bedrock, or unset {present}"]

    def provider_env(self) -> dict[str, str]:
        """The provider variables that are set, by their usual names, for ``credentials_from_env``."""
        names = {
            "ANTHROPIC_API_KEY": self.anthropic_api_key, "OPENAI_API_KEY": self.openai_api_key,
            "GEMINI_API_KEY": self.gemini_api_key, "XAI_API_KEY": self.xai_api_key,
            "OPENROUTER_API_KEY": self.openrouter_api_key, "OPENANALYST_API_KEY": self.openanalyst_api_key,
            "AWS_ACCESS_KEY_ID": self.aws_access_key_id, "AWS_SECRET_ACCESS_KEY": self.aws_secret_access_key,
            "AWS_SESSION_TOKEN": self.aws_session_token,
            "AWS_BEARER_TOKEN_BEDROCK": self.aws_bearer_token_bedrock,
        }
        env = {k: v.get_secret_value() for k, v in names.items() if v is not None and v.get_secret_value()}
        plain = {
            "AWS_REGION": self.aws_region, "OLLAMA_HOST": self.ollama_host,
            "ANTHROPIC_BASE_URL": self.anthropic_base_url, "OPENAI_BASE_URL": self.openai_base_url,
            "XAI_BASE_URL": self.xai_base_url, "OPENROUTER_BASE_URL": self.openrouter_base_url,
            "GEMINI_BASE_URL": self.gemini_base_url, "BEDROCK_BASE_URL": self.bedrock_base_url,
            "OPENANALYST_BASE_URL": self.openanalyst_base_url,
        }
        env.update({k: v for k, v in plain.items() if v})
        return env

    @property
    def db_path(self) -> Path:
        return self.data_dir / "server.db"
