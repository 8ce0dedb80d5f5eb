"""The audit viewer page in headless Chromium (Debian's ``chromium``, driven by Playwright without a browser
download) against the real server process with real tool calls in a real sandbox: the caller's tenant only,
filters, verification state, export, and hostile tool output shown as text with nothing executed.

Screenshots are kept under ``test-artifacts/viewer/`` at the repository root (gitignored); the path is printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_support import sandbox_workspace
from playwright.sync_api import Browser, Page, expect, sync_playwright

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(180)]

CHROMIUM = os.environ.get("OPENANALYST_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "viewer"
POLICY = """
name = "no-js"
cpus = 0.5
memory_mb = 256
pids = 128
tmpfs_mb = 16
nofile = 256
fsize_mb = 16
default_timeout_s = 20
max_timeout_s = 60
output_cap_bytes = 4096
max_concurrent_calls = 2
denied_tools = ["javascript"]
"""
PAYLOAD = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
BOB = {"X-Tenant-ID": "bob"}
ALICE = {"X-Tenant-ID": "alice"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module (root in CI needs --no-sandbox: Chromium's own sandbox, not ours)."""
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: run .ci/install-system.sh (Debian package chromium)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context per test: its own sessionStorage, nothing carried over."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    yield opened
    context.close()


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    assert path.stat().st_size > 1000
    return path


def call(server: Any, headers: dict[str, str], tool: str, tool_input: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.base}/v1/tools/{tool}", headers=headers, json={"input": tool_input}, timeout=60)


def connect(page: Page, server: Any, *, tenant: str = "", key: str = "") -> None:
    """Open the viewer, type the credentials and wait until the page says it loaded (or failed)."""
    page.goto(f"{server.base}/viewer")
    page.wait_for_selector("body[data-loaded]", state="attached")  # the first load, with no credentials yet
    page.evaluate("delete document.body.dataset.loaded")
    page.fill("#api-key", key)
    page.fill("#tenant", tenant)
    page.click("#auth button[type=submit]")
    page.wait_for_selector("body[data-loaded]", state="attached")


def apply_filters(page: Page, **values: str) -> None:
    for field, value in values.items():
        if field == "decision":
            page.select_option("#f-decision", value)
        else:
            page.fill(f"#f-{field}", value)
    page.evaluate("delete document.body.dataset.loaded")
    page.click("#filters button[type=submit]")
    page.wait_for_selector("body[data-loaded]", state="attached")


def rows(page: Page) -> list[dict[str, str]]:
    """The table's call rows as {column header: text}."""
    heads = page.locator("#calls thead th").all_inner_texts()
    out = []
    for row in page.locator("#calls tbody tr.call").all():
        out.append(dict(zip(heads, row.locator("td").all_inner_texts(), strict=True)))
    return out


@pytest.fixture
def server(serve: Callable[..., Any], sandbox_image: str, tmp_path: Path) -> Iterator[Any]:
    """A server where bob may not run javascript; alice and bob each have calls in their audit logs."""
    policy = tmp_path / "no-js.toml"
    policy.write_text(POLICY)
    env = {"OPENANALYST_OWNER_WORKSPACE": str(sandbox_workspace(tmp_path / "owner-ws")),
           "OPENANALYST_TENANT_POLICIES": json.dumps({"bob": str(policy)})}
    started = serve(env=env, data_dir=tmp_path / "data")
    assert call(started, ALICE, "bash", {"command": "echo alice-private-output"}).json()["exit_code"] == 0
    assert call(started, BOB, "bash", {"command": "echo bob-visible-output"}).json()["exit_code"] == 0
    assert call(started, BOB, "javascript", {"code": "1"}).status_code == 403
    yield started
    if started.proc.poll() is None:
        assert started.stop() == 0


def test_viewer_headers_are_strict(server: Any) -> None:
    """The page and its assets carry a CSP without inline script or foreign origins, and only the three
    known files are served."""
    page = httpx.get(f"{server.base}/viewer/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script" not in page.text.replace('<script src="viewer.js" defer></script>', "")
    script = httpx.get(f"{server.base}/viewer/viewer.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    for bad in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert bad not in script.text.split("\n", 4)[-1], bad  # the header comment names them; code must not
    missing = httpx.get(f"{server.base}/viewer/..%2Fapi%2Fviewer.py")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    assert "/viewer" not in json.dumps(httpx.get(f"{server.base}/openapi.json").json()["paths"])


def test_viewer_shows_only_the_callers_tenant_with_filters_and_export(server: Any, page: Page) -> None:
    """Bob's page lists bob's calls (input, output, container, image, decision), never alice's; the chain is
    shown verified; decision, tool and time filters narrow the list; the export downloads bob's log only."""
    connect(page, server, tenant="bob")
    assert page.evaluate("document.body.dataset.loaded") == "yes"
    expect(page.locator("#whoami")).to_have_text("Tenant: bob")
    expect(page.locator("#verify")).to_contain_text("Chain verified: 4 records")
    assert page.locator("#verify").get_attribute("data-ok") == "true"
    body = page.locator("#calls").inner_text()
    assert "bob-visible-output" in body and "alice" not in body
    listed = rows(page)
    assert [(r["tool"], r["decision"]) for r in listed] == [("bash", "allowed"), ("javascript", "denied")]
    assert listed[0]["result"] == "exit 0" and len(listed[0]["container"]) == 12 and listed[0]["image"]
    assert listed[1]["result"] == "TOOL_DENIED"
    assert page.locator("#calls tr.detail .input pre").first.inner_text().find("echo bob-visible-output") > 0
    screenshot(page, "bob-all")

    apply_filters(page, decision="denied")
    assert [r["tool"] for r in rows(page)] == ["javascript"]
    apply_filters(page, decision="", tool="bash")
    assert [r["tool"] for r in rows(page)] == ["bash"]
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    apply_filters(page, tool="", since=future)
    assert rows(page) == [] and page.locator("#empty").is_visible()
    apply_filters(page, since="yesterday")
    expect(page.locator("#error")).to_contain_text("422 INVALID_TIMESTAMP")
    apply_filters(page, since="")

    with page.expect_download() as download_info:
        page.click("#export-all")
    saved = Path(download_info.value.path())
    lines = [json.loads(line) for line in saved.read_text().splitlines()]
    assert download_info.value.suggested_filename.startswith("audit-bob-")
    assert lines[0]["type"] == "export" and lines[-1]["type"] == "head"
    assert {r["tenant"] for r in lines[1:-1]} == {"bob"} and len(lines) == 6


def test_a_key_bound_to_a_tenant_wins_over_the_typed_tenant(serve: Callable[..., Any], sandbox_image: str,
                                                           tmp_path: Path, page: Page,
                                                           openanalyst_cmd: list[str]) -> None:
    """With API keys required, bob's key shows bob's records even when the user types tenant alice; a wrong
    key shows the API's 401 and no records."""
    data = tmp_path / "keyed"
    server = serve(env={"OPENANALYST_REQUIRE_API_KEY": "true",
                        "OPENANALYST_OWNER_WORKSPACE": str(sandbox_workspace(tmp_path / "owner-ws"))},
                   data_dir=data)
    keys = {}
    for tenant in ("alice", "bob"):
        made = subprocess.run([*openanalyst_cmd, "--data-dir", str(data), "keys", "create", "--tenant", tenant],
                              capture_output=True, text=True, timeout=30, check=True)
        keys[tenant] = made.stdout.strip()
    for tenant, key in keys.items():
        done = call(server, {"Authorization": f"Bearer {key}"}, "bash", {"command": f"echo {tenant}-keyed-output"})
        assert done.json()["exit_code"] == 0

    connect(page, server, tenant="alice", key=keys["bob"])
    expect(page.locator("#whoami")).to_have_text("Tenant: bob")
    body = page.locator("#calls").inner_text()
    assert "bob-keyed-output" in body and "alice-keyed-output" not in body
    assert page.evaluate("sessionStorage.getItem('oa.apiKey')") == keys["bob"]

    connect(page, server, tenant="alice", key=keys["bob"][:-2] + "xx")
    assert page.evaluate("document.body.dataset.loaded") == "error"
    expect(page.locator("#error")).to_have_text("401 INVALID_API_KEY: the API key is missing or not valid")
    assert rows(page) == []
    screenshot(page, "wrong-key")


def test_hostile_tool_output_is_text_and_nothing_runs(server: Any, page: Page) -> None:
    """A tool input and output holding <script> and <img onerror> are shown verbatim as text: no element is
    made from them, no handler runs, and the browser reports no CSP violation (nothing even tried)."""
    command = "printf '%s' '" + PAYLOAD + "'"
    result = call(server, BOB, "bash", {"command": command}).json()
    assert result["output"] == PAYLOAD
    violations: list[str] = []
    requested: list[str] = []

    def console(message: Any) -> None:
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            violations.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda error: violations.append(str(error)))
    page.on("request", lambda request: requested.append(request.url))
    connect(page, server, tenant="bob")
    outputs = page.locator("#calls tr.detail .output pre").all_inner_texts()
    assert PAYLOAD in outputs
    inputs = page.locator("#calls tr.detail .input pre").all_inner_texts()  # JSON: the payload's quotes escaped
    assert any(PAYLOAD.replace('"', '\\"') in text for text in inputs)
    assert page.locator("#calls img, #calls script").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert violations == []
    assert not [url for url in requested if url.endswith("/x")]  # an <img src=x> would have fetched it
    screenshot(page, "xss-as-text")


def test_pages_of_a_long_log(server: Any, page: Page) -> None:
    """More than one page of records (100 per page): the pager moves between them and disables what it must."""
    carol = {"X-Tenant-ID": "carol"}
    for n in range(51):  # 102 records: started + finished each
        assert call(server, carol, "bash", {"command": f"echo call-{n}"}).json()["exit_code"] == 0
    connect(page, server, tenant="carol")
    expect(page.locator("#page-info")).to_have_text("page 1 of 2 · 102 records")
    assert page.locator("#prev").is_disabled() and page.locator("#next").is_enabled()
    assert "call-0\n" in page.locator("#calls").inner_text() + "\n"
    page.evaluate("delete document.body.dataset.loaded")
    page.click("#next")
    page.wait_for_selector("body[data-loaded]", state="attached")
    expect(page.locator("#page-info")).to_have_text("page 2 of 2 · 102 records")
    assert page.locator("#next").is_disabled() and page.locator("#prev").is_enabled()
    assert [r["seq"] for r in rows(page)] == ["101"]
    assert "call-50" in page.locator("#calls").inner_text()


def test_a_reused_call_id_does_not_hide_a_call(server: Any, page: Page) -> None:
    """A session's call ids come from the model provider and may repeat: the viewer's grouping gives each
    started/finished pair its own row instead of letting a later record replace an earlier one."""
    page.goto(f"{server.base}/viewer")
    page.wait_for_selector("body[data-loaded]", state="attached")
    records = [{"call_id": c, "seq": s, "phase": p} for c, s, p in (
        ("a", 1, "started"), ("a", 2, "finished"), ("a", 3, "started"), ("b", 4, "started"),
        ("a", 5, "finished"), ("b", 6, "finished"))]
    grouped = page.evaluate("""records => groupCalls(records).map(
        c => [c.id, c.started && c.started.seq, c.finished && c.finished.seq])""", records)
    assert grouped == [["a", 1, 2], ["a", 3, 5], ["b", 4, 6]]
