"""Stateful schemathesis against the live server: the document's OpenAPI links (a session made by
``POST /sessions`` then read, interrupted and deleted; a provider key stored then deleted; a run started then
read and cancelled) are followed with the ids the real answers carry, and every step is held to the document
— no 5xx, every status, header and body as documented — with all of schemathesis' checks."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from agent_support import sandbox_workspace, server_env
from fakes.account import FakeAccountService
from fakes.anthropic import FakeAnthropic
from fakes.reply import Reply
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance
from server_process import ServerProcess
from test_contract_e2e import SEMANTIC_REFUSALS, only_semantic_refusal

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.timeout(240)]

TENANT = "contract-stateful"


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as provider:
        provider.default = Reply.text("Done.")
        yield provider


@pytest.fixture
def server(serve: Callable[..., ServerProcess], fake: FakeAnthropic, account: FakeAccountService,
           sandbox_image: str, tmp_path: Path) -> ServerProcess:
    """Every backend configured (a provider, the account service, model substitution), so that a 5xx is the
    server's fault and never "not configured"."""
    env = server_env(fake.base_url, sandbox_workspace(tmp_path / "owner-ws"))
    return serve(env=env | {"OPENANALYST_ACCOUNT_SERVICE_URL": account.base_url,
                            "OPENANALYST_ALLOW_MODEL_SUBSTITUTION": "true"})


LINKED_PATHS = ("/sessions", "/sessions/{session_id}", "/sessions/{session_id}/interrupt", "/me/providers",
                "/me/providers/{name}", "/v1/runs", "/v1/runs/{run_id}", "/v1/runs/{run_id}/cancel")
"""The resources the document links; every other operation is fuzzed alone by test_contract_e2e."""


def linked_document(server: ServerProcess) -> dict[str, Any]:
    """The live document's linked resources, without the X-Tenant-ID parameter (one fixed tenant is sent:
    each new tenant would start a container)."""
    doc: dict[str, Any] = httpx.get(server.base + "/openapi.json", timeout=10).json()
    doc["paths"] = {path: item for path, item in doc["paths"].items() if path in LINKED_PATHS}
    for item in doc["paths"].values():
        for operation in item.values():
            operation["parameters"] = [p for p in operation.get("parameters", []) if p["name"] != "X-Tenant-ID"]
    return doc


def test_document_links_the_resources_it_makes(server: ServerProcess) -> None:
    """Each link names an operation of the document and fills every path parameter of its target."""
    doc = linked_document(server)
    by_id = {op["operationId"]: path for path, item in doc["paths"].items() for op in item.values()}
    links = {name: link for item in doc["paths"].values() for op in item.values()
             for answer in op["responses"].values() for name, link in answer.get("links", {}).items()}
    assert {"GetSession", "InterruptSession", "DeleteSession", "DeleteProvider"} <= set(links)
    for name, link in links.items():
        target = by_id[link["operationId"]]
        assert all(f"{{{p}}}" in target for p in link["parameters"]), name


def test_stateful_schemathesis_against_the_live_server(server: ServerProcess) -> None:
    """Sequences of linked calls with real ids: all of schemathesis' checks on every step."""
    config = SchemathesisConfig.from_dict({})
    schema = schemathesis.openapi.from_dict(linked_document(server), config=config)
    machine = schema.as_state_machine()
    steps: list[tuple[str, int]] = []

    class LiveServer(machine):  # type: ignore[valid-type, misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": server.base, "headers": {"X-Tenant-ID": TENANT}, "timeout": 30}

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            steps.append((f"{case.method} {case.path}", response.status_code))

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None,
                              **kwargs: Any) -> None:
            excluded = [positive_data_acceptance] if case.operation.path in SEMANTIC_REFUSALS else []
            case.validate_response(response, excluded_checks=excluded, additional_checks=[only_semantic_refusal],
                                   transport_kwargs=kwargs or None, recorder=self.recorder)

    LiveServer.run(settings=settings(max_examples=25, stateful_step_count=8, deadline=None, database=None,
                                     derandomize=True, suppress_health_check=list(HealthCheck)))
    followed = {op for op, status in steps if status < 400 and "{" in op}
    assert followed, f"no link was followed to a live resource: {json.dumps(sorted(set(steps)))}"
