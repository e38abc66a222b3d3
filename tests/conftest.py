from __future__ import annotations

from typing import Iterator

import pytest

from rts_sync.testing import ServerHandle, serve_in_thread

APP_ID = "rtsapp000000000000000001"
APP_KEY = "test-app-key-0001"


@pytest.fixture
def server() -> Iterator[ServerHandle]:
    handle = serve_in_thread(apps={APP_ID: APP_KEY})
    try:
        yield handle
    finally:
        handle.stop()
