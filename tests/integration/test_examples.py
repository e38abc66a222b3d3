"""The examples and the demo run as a user would run them, and succeed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_example_runs(script: str) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), "the example printed nothing"


def test_demo_succeeds() -> None:
    proc = subprocess.run([sys.executable, "-m", "rts_sync.demo"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "demo succeeded" in proc.stdout
    assert "text from alice: 'hello bob'" in proc.stdout
