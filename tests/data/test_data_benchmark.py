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


@pytest.mark.slow
def test_manifest_scale_benchmark_quick_mode_runs() -> None:
    script = SCRIPT.with_name("bench_manifest_scale.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, str(script), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ManifestTable.open (memory-mapped table)" in proc.stdout


@pytest.mark.slow
def test_storage_loader_benchmark_quick_mode_runs() -> None:
    pytest.importorskip("av")
    pytest.importorskip("PIL")
    script = SCRIPT.with_name("bench_storage_loader.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, str(script), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for row in (
        "column cache (null)",
        "(b) lossless, cache 25%",
        "(c) video, cache 5%",
        "baseline: per-sample PNG",
    ):
        assert row in out
    assert "cache peak within budget: yes" in out
