from __future__ import annotations

import os
from typing import Iterator, List

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


# In CI every service a test needs is installed and started, so a skipped test is a failure.
_skipped: List[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI") == "true" and _skipped and session.exitstatus == 0:
        session.exitstatus = 1
        print("\nCI: %d test(s) skipped; in CI every test must run: %s"
              % (len(_skipped), ", ".join(_skipped[:10])))
