"""What the store-level tests are given: a factory of opened stores (``make_store`` in tests/conftest.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from server.store.store import Store

StoreFactory = Callable[[], contextlib.AbstractAsyncContextManager[Store]]
