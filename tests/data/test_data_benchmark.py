"""benchmarks/bench_dataloader.py runs end to end (tiny sizes; the figures themselves are not asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_dataloader.py"


@pytest.mark.slow
def test_benchmark_quick_mode_runs() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for row in ("(a) seed layout", "(b) make_dataloader, column cache, 0 workers", "(c) in-memory"):
        assert row in out
    assert "cache build" in out and "open 300 episodes" in out and "peak RSS" in out
