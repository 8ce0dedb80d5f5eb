"""Environments through a real server process and the real engine: a tenant defines one with a Debian
package, a wheel from a local index and an npm package from a local registry, follows its build over SSE and
uses all three from a session's tool call; another tenant's identical definition is ready at once (one build);
a bad definition fails with apt's own words and its calls are refused; bad specs are refused before anything
runs; a tenant's default environment applies to calls outside a session."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import jsonschema
import pytest
from agent_support import parse_sse, sandbox_workspace
from test_environments_support import tiny_packages

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(600)]
ACME = {"X-Tenant-ID": "acme"}
BOB = {"X-Tenant-ID": "bob"}


@pytest.fixture
def server(serve: Callable[..., Any], sandbox_image: str, tmp_path: Path) -> Iterator[Any]:
    """A server whose environments fetch from package sources on loopback; built images removed after."""
    with tiny_packages(tmp_path / "packages") as served:
        env = {"OPENANALYST_OWNER_WORKSPACE": str(sandbox_workspace(tmp_path / "owner-ws")),
               "OPENANALYST_SANDBOX_LABELS": json.dumps({"openanalyst.test": "1"}),
               "OPENANALYST_ENVIRONMENT_PIP_INDEX_URL": served.pip_index,
               "OPENANALYST_ENVIRONMENT_NPM_REGISTRY": served.url}
        started = serve(env=env, data_dir=tmp_path / "data")
        started.images = []
        started.http = httpx.Client(base_url=started.base, timeout=60)  # the machine is shared: no 5 s default
        yield started
        started.http.close()
        if started.proc.poll() is None:
            assert started.stop() == 0
        client = docker.from_env(timeout=60)
        try:
            for tag in started.images:
                with contextlib.suppress(docker.errors.NotFound):
                    client.api.remove_image(tag, force=True)
        finally:
            client.close()


def follow_build(server: Any, name: str, headers: dict[str, str]) -> tuple[list[str], dict[str, Any]]:
    """The progress lines and the final event of an environment's build stream, each event checked against
    the EnvironmentBuildEvent union of the server's OpenAPI document."""
    components = server.http.get("/openapi.json").json()["components"]
    union = {"$ref": "#/components/schemas/EnvironmentBuildEvent", "components": components}
    lines: list[str] = []
    with httpx.stream("GET", f"{server.base}/v1/environments/{name}/build/events", headers=headers,
                      timeout=httpx.Timeout(10, read=300)) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for kind, data, _ in parse_sse(response.iter_lines()):
            jsonschema.validate({"type": kind, **data}, union, cls=jsonschema.Draft202012Validator)
            if kind == "environment_build_progress":
                lines.append(data["line"])
            elif kind == "environment_build_done":
                return lines, data
    raise AssertionError(f"the stream ended without environment_build_done after {lines[-5:]}")


def bash(server: Any, headers: dict[str, str], command: str, session_id: str | None = None,
         environment: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"input": {"command": command}}
    if session_id is not None:
        body["session_id"] = session_id
    if environment is not None:
        body["environment"] = environment
    answer: httpx.Response = server.http.post("/v1/tools/bash", headers=headers, json=body, timeout=180)
    return answer


def test_packages_built_offline_and_used_by_a_session(server: Any) -> None:
    """jq, a wheel and an npm package, built in the background with SSE progress, run in a session's call;
    bob's identical definition is ready at once, the same image (built once, shared)."""
    definition = {"debian": ["jq"], "python": ["oatiny==1.0"], "npm": ["oa-tiny-js@1.0.0"],
                  "dockerfile": f"RUN echo {uuid.uuid4().hex} > /etc/oa-test-marker"}
    created = server.http.post("/v1/environments", headers=ACME, json={"name": "data", **definition},
                         timeout=60)
    assert created.status_code == 202, created.text
    assert created.json()["state"] == "building"
    lines, done = follow_build(server, "data", ACME)
    assert done["state"] == "ready", done
    server.images.append(done["image"])
    assert any("apt-get" in line or "jq" in line for line in lines)
    assert any("network none" in line for line in lines)
    view = server.http.get("/v1/environments/data", headers=ACME).json()
    assert view["state"] == "ready" and view["image"] == done["image"] and view["debian"] == ["jq"]

    session = server.http.post("/sessions", headers=ACME, json={"environment": "data"}).json()
    assert session["environment"] == "data"
    answer = bash(server, ACME, "echo '{\"a\": 41}' | jq '.a + 1'; python3 -c 'import oatiny; "
                  "print(oatiny.hello())'; node -e \"console.log(require('oa-tiny-js').hello())\"; oa-tiny",
                  session["session_id"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["output"].split("\n")[:4] == [
        "42", "hello from oatiny", "hi from oa-tiny-js", "cli says hi from oa-tiny-js"]
    assert bash(server, ACME, "command -v jq || echo none").json()["output"].strip() == "none"  # no default
    named = bash(server, ACME, "jq -n 1+1", environment="data")  # a direct call naming its environment
    assert named.status_code == 200 and named.json()["output"].strip() == "2", named.text
    unknown = bash(server, ACME, "true", environment="nope")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "ENVIRONMENT_NOT_FOUND"

    shared = server.http.post("/v1/environments", headers=BOB, json={"name": "mine", **definition},
                        timeout=60).json()
    assert shared["state"] == "ready" and shared["image"] == done["image"] and shared["hash"] == view["hash"]
    assert server.http.get("/v1/environments", headers=BOB).json()["data"][0]["name"] == "mine"
    assert server.http.get("/v1/environments/data", headers=BOB).status_code == 404  # acme's


def test_bad_definition_fails_with_the_build_error(server: Any) -> None:
    """A package Debian lacks: the build fails with apt's words; a session in it gets 409 on a call."""
    body = {"name": "broken", "debian": ["oa-no-such-package"], "dockerfile": f"RUN echo {uuid.uuid4().hex}"}
    assert server.http.post("/v1/environments", headers=ACME, json=body).status_code == 202
    _, done = follow_build(server, "broken", ACME)
    assert done["state"] == "failed" and done["code"] == "ENVIRONMENT_BUILD_FAILED"
    assert "Unable to locate package oa-no-such-package" in done["message"]
    view = server.http.get("/v1/environments/broken", headers=ACME).json()
    assert view["state"] == "failed" and "oa-no-such-package" in view["error"]
    session = server.http.post("/sessions", headers=ACME, json={"environment": "broken"}).json()
    refused = bash(server, ACME, "true", session["session_id"])
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "ENVIRONMENT_BUILD_FAILED"


@pytest.mark.parametrize("body", [
    {"name": "x", "npm": ["git+https://example.org/x.git"]}, {"name": "x", "python": ["pkg @ http://x/y.whl"]},
    {"name": "x", "debian": ["jq; id"]}, {"name": "x", "dockerfile": "USER root"},
    {"name": "x", "dockerfile": "COPY --from=alpine / /"}, {"name": "Bad"},
])
def test_invalid_definitions_refused(server: Any, body: dict[str, Any]) -> None:
    """Specs that are not plain names, disallowed instructions and bad names: 422 before anything runs."""
    answer = server.http.post("/v1/environments", headers=ACME, json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] in {"ENVIRONMENT_INVALID", "VALIDATION_ERROR", "INVALID_REQUEST"}


def test_reserved_and_duplicate_names(server: Any) -> None:
    """`default` names the tenant's default, never an environment; a name is taken once per tenant."""
    reserved = server.http.post("/v1/environments", headers=ACME, json={"name": "default"})
    assert reserved.status_code == 409 and reserved.json()["error"]["code"] == "ENVIRONMENT_NAME_RESERVED"
    assert server.http.post("/v1/environments", headers=ACME, json={"name": "plain"}).json()["state"] == "ready"
    again = server.http.post("/v1/environments", headers=ACME, json={"name": "plain"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "ENVIRONMENT_EXISTS"


def test_default_environment_and_unknown_names(server: Any) -> None:
    """The tenant's default applies to calls outside a session; unknown names are ENVIRONMENT_NOT_FOUND."""
    missing = server.http.post("/sessions", headers=ACME, json={"environment": "nope"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "ENVIRONMENT_NOT_FOUND"
    body = {"name": "marked", "dockerfile": f"RUN echo {uuid.uuid4().hex} > /etc/oa-test-marker"}
    server.http.post("/v1/environments", headers=ACME, json=body)
    _, done = follow_build(server, "marked", ACME)
    server.images.append(done["image"])
    put = server.http.put("/v1/environments/default", headers=ACME, json={"environment": "marked"})
    assert put.status_code == 200 and put.json() == {"environment": "marked"}
    marker = body["dockerfile"].split()[2]
    assert bash(server, ACME, "cat /etc/oa-test-marker").json()["output"].strip() == marker
    assert server.http.delete("/v1/environments/marked", headers=ACME).status_code == 204
    assert server.http.get("/v1/environments/default", headers=ACME).json() == {"environment": None}
    gone = server.http.put("/v1/environments/default", headers=ACME, json={"environment": "marked"})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "ENVIRONMENT_NOT_FOUND"


def test_a_tenant_cannot_queue_builds_without_bound(server: Any) -> None:
    """Two new builds of a tenant queued or running (OPENANALYST_MAX_ENVIRONMENT_BUILDS_PER_TENANT's default):
    its third new definition is 429 ENVIRONMENT_BUILDS_BUSY with a Retry-After and is not kept; another tenant
    still builds, and once the tenant's builds end it may define the third."""
    bodies = [{"name": f"queued-{i}", "dockerfile": f"RUN echo {uuid.uuid4().hex}"} for i in range(3)]
    assert [server.http.post("/v1/environments", headers=ACME, json=b).status_code for b in bodies[:2]] == [202, 202]
    over = server.http.post("/v1/environments", headers=ACME, json=bodies[2])
    assert over.status_code == 429 and over.json()["error"]["code"] == "ENVIRONMENT_BUILDS_BUSY", over.text
    assert int(over.headers["Retry-After"]) > 0
    assert server.http.get("/v1/environments/queued-2", headers=ACME).status_code == 404
    theirs = {"name": "theirs", "dockerfile": f"RUN echo {uuid.uuid4().hex}"}
    assert server.http.post("/v1/environments", headers=BOB, json=theirs).status_code == 202
    for name, headers in (("queued-0", ACME), ("queued-1", ACME), ("theirs", BOB)):
        _, done = follow_build(server, name, headers)
        assert done["state"] == "ready", done
        server.images.append(done["image"])
    assert server.http.post("/v1/environments", headers=ACME, json=bodies[2]).status_code == 202
    _, done = follow_build(server, "queued-2", ACME)
    assert done["state"] == "ready", done
    server.images.append(done["image"])
