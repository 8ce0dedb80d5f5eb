"""web_search against a fake SearXNG speaking its JSON API over real HTTP on loopback, and without a backend."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

import pytest
from fakes.origin import serving

from server.tools.context import ToolContext
from server.tools.web_search import SearxngBackend, web_search_handler
from toolrunner.results import ToolResult

RESULTS = [{"title": f"Result {i}", "url": f"https://example.org/{i}", "content": f"snippet  {i}\n more",
            "engine": "fake"} for i in range(1, 9)]


@pytest.fixture
def searxng() -> Iterator[tuple[str, list[dict[str, object]]]]:
    seen: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            seen.append({"path": url.path, "query": query, "auth": self.headers.get("Authorization")})
            if query.get("format") != ["json"]:
                status, body = 403, b"Forbidden"
            elif query["q"] == ["broken"]:
                status, body = 200, b"<html>not json</html>"
            else:
                status, body = 200, json.dumps({"query": query["q"][0], "results": RESULTS}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serving(Handler, "127.0.0.2") as port:
        yield f"http://127.0.0.2:{port}/", seen


def _run(backend: SearxngBackend | None, args: dict[str, object]) -> ToolResult:
    return asyncio.run(web_search_handler(backend)(ToolContext(tenant_id="t1", session_id="s1"), args))


def test_searxng_results_become_titles_urls_and_snippets(searxng: tuple[str, list[dict[str, object]]]) -> None:
    """The query goes to /search with format=json and the key as a bearer token; max_results caps the list."""
    url, seen = searxng
    result = _run(SearxngBackend(url, api_key="k-1"), {"query": "pandas read_csv", "max_results": 3})
    assert result.error is None, result
    assert result.output.splitlines() == ["1. Result 1", "   https://example.org/1", "   snippet 1 more",
                                          "2. Result 2", "   https://example.org/2", "   snippet 2 more",
                                          "3. Result 3", "   https://example.org/3", "   snippet 3 more"]
    (request,) = seen
    assert request["path"] == "/search" and request["auth"] == "Bearer k-1"
    assert request["query"] == {"q": ["pandas read_csv"], "format": ["json"], "safesearch": ["1"]}


def test_a_backend_failure_is_a_clear_error(searxng: tuple[str, list[dict[str, object]]]) -> None:
    """An answer that is not JSON, and an instance that is not there, are WEB_SEARCH_FAILED saying which."""
    url, _ = searxng
    broken = _run(SearxngBackend(url), {"query": "broken"})
    assert broken.error is not None and broken.error.code == "WEB_SEARCH_FAILED" and "not JSON" in broken.error.message
    gone = _run(SearxngBackend("http://127.0.0.2:9/"), {"query": "x"})
    assert gone.error is not None and gone.error.code == "WEB_SEARCH_FAILED" and "unreachable" in gone.error.message


def test_without_a_backend_the_tool_says_so() -> None:
    """No backend configured: WEB_SEARCH_NOT_CONFIGURED, kept as the server's own code."""
    result = _run(None, {"query": "anything"})
    assert result.error is not None and result.error.code == "WEB_SEARCH_NOT_CONFIGURED"
