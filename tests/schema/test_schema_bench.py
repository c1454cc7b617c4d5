"""The writer benchmark runs (no timing assertions: machines differ)."""

from __future__ import annotations

import subprocess
import sys

from schema_testlib import REPO_ROOT


def test_bench_writer_quick_prints_the_table(tmp_path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "bench_writer.py"),
            "--quick",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for row in (
        "savez_compressed (baseline)",
        "EpisodeWriter (validate+atomic+fsync)",
        "seed layout (pickled dicts)",
        "validate_step only (no IO)",
    ):
        assert row in out, out
    assert "steps/s" in out and "MB/s" in out and "vs savez" in out
    assert "EpisodeWriter overhead vs bare savez" in out
    assert not list(tmp_path.iterdir())  # cleaned up after itself
