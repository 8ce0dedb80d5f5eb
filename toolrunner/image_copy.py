"""An image moved from one engine to another, as ``docker save | docker load`` does, with no registry and no file.

Why: the server builds the sandbox image (and tenants' environment images) on one engine; every engine a tenant
may be placed on needs it. The archive streams from the source's ``GET /images/{name}/get`` into the target's
``POST /images/load`` in chunks, so memory stays bounded whatever the image's size. Each side gets a client of
its own with a long read timeout: a load answers only once the engine has unpacked every layer, which takes far
longer than the per-request bound of ordinary operations.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import docker
import requests

from toolrunner.engines import EngineAddress
from toolrunner.errors import SandboxImageUnavailable

log = logging.getLogger(__name__)
COPY_TIMEOUT_S = 600  # one read of either side; a 300 MB image takes 10-40 s on the development machine
CHUNK = 1 << 20


class ImageCopyFailed(SandboxImageUnavailable):
    """The image could not be copied to an engine that lacks it (the message says which and why)."""


def copy_image(image: str, source: EngineAddress, target: EngineAddress) -> float:
    """Stream `image` from `source` into `target`; returns the seconds it took. Raises ImageCopyFailed."""
    started = time.monotonic()
    src = dst = None
    try:
        src = source.docker_client(timeout_s=COPY_TIMEOUT_S, max_pool_size=1)
        dst = target.docker_client(timeout_s=COPY_TIMEOUT_S, max_pool_size=1)
        archive = src.api.get_image(image, chunk_size=CHUNK)
        _check_load(dst.api.load_image(archive, quiet=True), image, target)
        dst.api.inspect_image(image)  # loaded under its tag, or the copy did not do its job
    except ImageCopyFailed:
        raise
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise ImageCopyFailed(f"copying {image} from {source.url} to {target.url} failed: {exc}") from exc
    finally:
        for client in (src, dst):
            if client is not None:
                client.close()
    took = time.monotonic() - started
    log.info("copied %s from %s to %s in %.1f s", image, source.url, target.url, took)
    return took


def _check_load(events: Any, image: str, target: EngineAddress) -> None:
    """The load's answer is a stream of JSON objects; one with ``error`` means it failed."""
    for event in events or ():
        if isinstance(event, dict) and event.get("error"):
            raise ImageCopyFailed(f"{target.url} refused {image}: {str(event['error'])[:300]}")
