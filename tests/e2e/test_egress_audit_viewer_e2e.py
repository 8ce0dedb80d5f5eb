"""The audit viewer in headless Chromium shows a tenant's egress connections as rows of their own (method,
host and port, decision, rule, bytes, call), next to the call's records, and its host filter narrows the list
to one host's connections; the chain shows verified."""

from __future__ import annotations

from typing import Any

import pytest
from fakes.origin import serving
from playwright.sync_api import Page, expect
from test_egress_audit_e2e import _connections, _tool, _until, server
from test_egress_e2e import Hello
from test_viewer_e2e import apply_filters, browser, connect, page, rows

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(180)]
__all__ = ["browser", "page", "server"]  # fixtures of the viewer's and the egress audit's tests, used by name
ADA = {"X-Tenant-ID": "ada"}


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
