"""A second real Docker engine for the module (TLS on 127.0.0.1 and a unix socket), with the sandbox image."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from engine_support import SecondEngine, copy_image, start_second_engine, stop_second_engine


@pytest.fixture(scope="module")
def second_engine(sandbox_image: str) -> Iterator[SecondEngine]:
    engine = start_second_engine()
    try:
        copy_image(sandbox_image, engine)
        yield engine
    finally:
        stop_second_engine(engine)
