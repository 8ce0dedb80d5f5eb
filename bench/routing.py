"""What FastAPI's route matching costs per request on our app, for the tool call and a few other routes.

    .venv/bin/python bench/routing.py [--n 3000]

The real app (``build_app``) and its real router; only the endpoints are replaced, by one that stops the
request as soon as the router has chosen it, so a sample is the router's work alone: the included routers
tried in order until one matches (docs/speed.md, "HTTP path"). Prints microseconds per request and the load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PATHS = [("POST", "/v1/tools/bash"), ("POST", "/sessions/s1/message"), ("GET", "/v1/audit"), ("GET", "/v1/runs/r1")]


class Chosen(Exception):
    """Raised by every endpoint: the router has matched the request."""


async def chosen(self: Any, scope: Any, receive: Any, send: Any) -> None:
    raise Chosen(scope["route"].path)


async def measure(app: Any, method: str, path: str, n: int) -> tuple[str, float]:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        return None

    async def once() -> str:
        scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "root_path": "",
                 "headers": [], "query_string": b"", "app": app, "http_version": "1.1", "scheme": "http",
                 "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1)}
        try:
            await app.router(scope, receive, send)
        except Chosen as exc:
            return str(exc)
        raise RuntimeError(f"{method} {path}: no route chosen")

    route = await once()
    started = time.perf_counter()
    for _ in range(n):
        await once()
    return route, (time.perf_counter() - started) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="requests per route")
    args = parser.parse_args()
    os.environ["OPENANALYST_DATA_DIR"] = tempfile.mkdtemp(prefix="oa-bench-routing-")
    from fastapi.routing import APIRoute

    from server.app import build_app
    from server.settings import Settings

    app = build_app(Settings())
    APIRoute.handle = chosen  # type: ignore[method-assign]
    load = os.getloadavg()[0]
    for method, path in PATHS:
        route, seconds = asyncio.run(measure(app, method, path, args.n))
        print(f"{method:4} {path:24} -> {route:32} {seconds * 1e6:7.1f} us")
    print(f"load average before {load:.2f}, after {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
