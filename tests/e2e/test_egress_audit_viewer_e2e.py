"""The audit viewer in headless Chromium shows a tenant's egress connections as rows of their own (method,
host and port, decision, rule, bytes, call), next to the call's records, and its host filter narrows the list
to one host's connections; the chain shows verified."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.origin import serving
from playwright.sync_api import Page, expect
from test_egress_audit_e2e import _connections, _tool, _until
from test_egress_e2e import POLICY, Hello
from test_viewer_e2e import apply_filters, browser, connect, page, rows

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(180)]
__all__ = ["browser", "page"]  # the viewer module's fixtures, used here by name
ADA = {"X-Tenant-ID": "ada"}


@pytest.fixture
def server(serve: Callable[..., Any], sandbox_image: str, tmp_path: Path) -> Iterator[Any]:
    policy = tmp_path / "allow.toml"
    policy.write_text(POLICY)
    started = serve(env={"OPENANALYST_TENANT_POLICIES": json.dumps({"ada": str(policy)}),
                         "OPENANALYST_EGRESS_PRIVATE_NETWORKS": "127.0.0.1/32"})
    yield started
    if started.proc.poll() is None:
        assert started.stop() == 0


def test_connections_are_rows_and_filter_by_host(server: Any, page: Page) -> None:
    """One allowed and one denied connection of a bash call: two connection rows carrying the call's id, the
    call's own row; the host filter keeps only the allowed one."""
    with serving(Hello) as port:
        answer = _tool(server, ADA, "bash", input={"command": (
            f"curl -s -o /dev/null http://localhost:{port}/; curl -s -o /dev/null http://denied.example:{port}/")})
    assert answer["network"]["allowed"] == 1 and answer["network"]["denied"] == 1, answer
    assert len(_until(lambda: _connections(server, ADA), 2)) == 2

    connect(page, server, tenant="ada")
    expect(page.locator("#verify")).to_contain_text("Chain verified: 4 records")
    listed = rows(page)
    connections = page.locator("#calls tbody tr.connection")
    assert connections.count() == 2
    assert [r["tool"] for r in listed] == ["bash", f"GET localhost:{port}", f"GET denied.example:{port}"]
    assert [r["decision"] for r in listed[1:]] == ["allowed", "denied"]
    assert listed[2]["result"] == "default"
    assert {connections.nth(i).get_attribute("data-call-id") for i in range(2)} == {answer["call_id"]}

    apply_filters(page, host="localhost")
    assert [r["tool"] for r in rows(page)] == [f"GET localhost:{port}"]
