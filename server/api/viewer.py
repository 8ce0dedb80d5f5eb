"""The audit viewer: one static page (HTML, a script and a stylesheet, no build step) whose script reads the
caller's own audit log through the JSON API (``/v1/audit``, ``/v1/audit/verify``, ``/v1/audit/export``).

Why static: a browser cannot put ``Authorization: Bearer`` or ``X-Tenant-ID`` on a page navigation, so the
page carries no data at all and needs no auth; the script sends the key and tenant the user typed (kept in
``sessionStorage``) on every API call, and the API's own tenant dependency decides what comes back. The page
therefore can never show more than the API would answer the same headers.

Why these headers: tool input and output are attacker-controlled. The script only ever sets ``textContent``,
and the Content-Security-Policy below forbids inline script, inline handlers, ``eval``, foreign origins,
frames and plugins, so a ``<script>`` or ``<img onerror>`` in a record is shown as text and cannot run even if
an escaping mistake slipped in. ``docs/viewer.md`` has the rest.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from server.errors import NotFound

router = APIRouter(tags=["viewer"], include_in_schema=False)

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
ASSETS = {  # the only files served: no path from the request reaches the file system
    "index.html": "text/html; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
    "viewer.css": "text/css; charset=utf-8",
}


@cache
def _asset(name: str) -> bytes:
    return (resources.files("server") / "viewer_static" / name).read_bytes()


def _serve(name: str) -> Response:
    return Response(_asset(name), media_type=ASSETS[name], headers=HEADERS)


@router.get("/viewer")
async def viewer_redirect() -> RedirectResponse:
    """``/viewer`` → ``/viewer/`` so that the page's relative asset paths resolve under it."""
    return RedirectResponse("/viewer/", status_code=308)


@router.get("/viewer/")
async def viewer_page() -> Response:
    """The page itself: no data, no auth; its script asks the API with the caller's headers."""
    return _serve("index.html")


@router.get("/viewer/{name}")
async def viewer_asset(name: str) -> Response:
    """The page's script and stylesheet, by exact name."""
    if name not in ASSETS or name == "index.html":
        raise NotFound("NOT_FOUND", "no such viewer file")
    return _serve(name)
