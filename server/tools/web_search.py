"""``web_search {query, max_results?}``: titles, URLs and snippets from a search backend the owner configured.

Backends sit behind one small interface (``SearchBackend.search``); the first is a self-hosted SearXNG's JSON
API (``/search?q=…&format=json``, which the instance must enable under ``search.formats``). The backend's URL
and key are the owner's server settings, like provider keys, so the server calls it directly rather than
through a tenant's egress proxy. With no backend configured the tool answers ``WEB_SEARCH_NOT_CONFIGURED``.

Not registered in the tool registry yet (docs/egress.md).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from pydantic import Field

from server.tools.context import ToolContext
from server.tools.registry import ToolDef
from server.tools.specs import ToolInput
from toolrunner.results import ToolError, ToolResult

MAX_RESULTS = 20
SNIPPET_CHARS = 500


class WebSearchInput(ToolInput):
    query: str = Field(min_length=1, max_length=500)
    max_results: int = Field(default=5, ge=1, le=MAX_RESULTS)


@dataclass(frozen=True)
class Hit:
    title: str
    url: str
    snippet: str


class SearchError(Exception):
    """The backend failed or answered something that is not a result list; the message says which."""


class SearchBackend(Protocol):
    name: str

    async def search(self, query: str, max_results: int) -> list[Hit]:
        """Up to ``max_results`` hits, best first; SearchError when the backend fails."""


class SearxngBackend:
    """A SearXNG instance's JSON API; ``api_key`` (optional) goes as a bearer token for instances behind one."""

    name = "searxng"

    def __init__(self, base_url: str, *, api_key: str | None = None, client: httpx.AsyncClient | None = None,
                 timeout_s: float = 15.0) -> None:
        self._url = base_url.rstrip("/") + "/search"
        self._headers = {"Accept": "application/json"} | ({"Authorization": f"Bearer {api_key}"} if api_key else {})
        self._client = client
        self._timeout = timeout_s

    async def search(self, query: str, max_results: int) -> list[Hit]:
        params = {"q": query, "format": "json", "safesearch": "1"}
        try:
            if self._client is not None:
                resp = await self._client.get(self._url, params=params, headers=self._headers, timeout=self._timeout)
            else:
                async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as client:
                    resp = await client.get(self._url, params=params, headers=self._headers, timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise SearchError(f"searxng unreachable: {exc.__class__.__name__}") from exc
        if resp.status_code != 200:
            raise SearchError(f"searxng answered {resp.status_code} (is format 'json' enabled on the instance?)")
        try:
            results = resp.json().get("results")
        except ValueError as exc:
            raise SearchError("searxng answered something that is not JSON") from exc
        if not isinstance(results, list):
            raise SearchError("searxng's answer has no result list")
        hits: list[Hit] = []
        for item in results:
            if not isinstance(item, dict) or not isinstance(item.get("url"), str):
                continue
            hits.append(Hit(str(item.get("title") or item["url"])[:300], item["url"][:2000],
                            " ".join(str(item.get("content") or "").split())[:SNIPPET_CHARS]))
            if len(hits) >= max_results:
                break
        return hits


def _result(output: str, started: float, error: ToolError | None = None) -> ToolResult:
    return ToolResult(tool_name="web_search", output=output, exit_code=1 if error else 0,
                      duration_ms=round((time.perf_counter() - started) * 1000, 3), truncated=False,
                      timed_out=False, limit=None, error=error)


NOT_CONFIGURED = ("no search backend is configured on this server (the owner sets a SearXNG URL in the server "
                  "settings)")


def web_search_handler(backend: SearchBackend | None
                       ) -> Callable[[ToolContext, dict[str, Any]], Awaitable[ToolResult]]:
    async def web_search(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        started = time.perf_counter()
        if backend is None:
            return _result("", started, ToolError.host("WEB_SEARCH_NOT_CONFIGURED", NOT_CONFIGURED))
        try:
            hits = await backend.search(str(args["query"]), int(args.get("max_results") or 5))
        except SearchError as exc:
            return _result("", started, ToolError.host("WEB_SEARCH_FAILED", str(exc)))
        if not hits:
            return _result("no results", started)
        lines = [f"{i}. {h.title}\n   {h.url}\n   {h.snippet}".rstrip() for i, h in enumerate(hits, 1)]
        return _result("\n".join(lines), started)
    return web_search


def web_search_tool(backend: SearchBackend | None) -> ToolDef:
    return ToolDef("web_search", "Search the web; returns titles, URLs and snippets (fetch a page with web_fetch).",
                   WebSearchInput, "server", web_search_handler(backend),
                   probe=(lambda tenant_id: NOT_CONFIGURED) if backend is None else None)  # not offered without one
