"""What the guarded client for tenants' provider URLs costs per request; prints one table.

    .venv/bin/python bench/guarded_connect.py [--n 500]

Both clients post to the same fake provider on loopback (``localhost``, allowed by an allow-list), once with
keep-alive and once with ``Connection: close`` (a new TCP connection, hence a lookup and a check, per
request). Medians in ms; the plain client is the one the server uses for its own credentials.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakes import FakeOpenAI, Reply

from server.providers.addresses import UrlPolicy
from server.providers.guarded_http import guarded_client


async def median_ms(client: httpx.AsyncClient, url: str, n: int, headers: dict[str, str]) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        await client.post(url, json={}, headers=headers)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def main(n: int) -> None:
    policy = UrlPolicy.parse(False, ["127.0.0.1/32", "::1/128"])
    with FakeOpenAI() as fake:
        fake.default = Reply.http_error(418)
        url = f"http://localhost:{fake.port}/v1/chat/completions"
        print(f"{'connection':<12} {'plain ms':>9} {'guarded ms':>11}")
        for label, headers in (("keep-alive", {}), ("new", {"connection": "close"})):
            async with httpx.AsyncClient() as plain, guarded_client(policy) as guarded:
                await median_ms(plain, url, 20, headers)  # warm-up
                await median_ms(guarded, url, 20, headers)
                print(f"{label:<12} {await median_ms(plain, url, n, headers):>9.3f} "
                      f"{await median_ms(guarded, url, n, headers):>11.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=500)
    asyncio.run(main(parser.parse_args().n))
