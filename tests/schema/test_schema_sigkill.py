"""Crash safety: a writer killed with SIGKILL at random moments never leaves a partial episode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from schema_testlib import REPO_ROOT
from teamvla_schema import find_episodes, validate_episode_file
from teamvla_schema.atomic import is_temporary

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL"),
]

# Records episodes forever: 48 steps of two 96x96 cameras (~2.6 MB raw each), so that a
# kill often lands while an episode is being compressed and written.
WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from teamvla_schema import EpisodeWriter

    root = sys.argv[1]
    y, x = np.mgrid[0:96, 0:96].astype(np.float32)
    frames = [
        np.stack([(x + 3 * t) % 256, (y * 2 + t) % 256, (x + y + 5 * t) % 256], -1).astype(np.uint8)
        for t in range(8)
    ]
    print("ready", flush=True)
    with EpisodeWriter(root) as writer:
        while True:
            writer.start_episode({"task": "lift", "user": {"pid": 0}})
            for i in range(48):
                q = np.full(7, i / 64, np.float32)
                writer.add_step({
                    "rgb_a": frames[i % 8], "rgb_b": frames[(i + 3) % 8],
                    "q_a": q, "q_b": -q, "action_a": q, "action_b": -q,
                    "grip_a": 0.5, "grip_b": 0.0, "instruction": "lift the red block",
                    "task": "lift", "success": i == 47,
                })
            writer.end_episode()
    """
)


def _kill_after(root: Path, delay: float) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == b"ready", (line, proc.stderr.read() if proc.stderr else b"")
        time.sleep(delay)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_during_writes_leaves_only_complete_episodes(tmp_path: Path) -> None:
    root = tmp_path / "episodes"
    delays = np.random.default_rng(20240611).uniform(0.1, 0.7, size=5)
    start = time.monotonic()
    for delay in delays:
        _kill_after(root, float(delay))
    elapsed = time.monotonic() - start

    episodes = find_episodes(root)
    assert episodes, "the writer never finished an episode; increase the delays"
    for path in episodes:
        header = validate_episode_file(path)
        assert header.meta.num_steps == 48

    leftovers = []
    for path in root.rglob("*"):
        if path.is_dir():
            continue
        if is_temporary(path):
            leftovers.append(path)  # a killed writer's unfinished file: ignored by every reader
            assert path.name.startswith(".") and path.name.endswith(".tmp")
            assert path not in episodes
        else:
            assert path.suffix == ".npz" and path in episodes, f"unexpected visible file {path}"

    ids = sorted(p.stem for p in episodes)
    assert ids == [f"lift-{i:06d}" for i in range(len(ids))]  # no gaps, no duplicates

    result = subprocess.run(
        [sys.executable, "-m", "teamvla_schema.cli", "validate", str(root)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(episodes)} episode file(s) checked, {len(episodes)} ok, 0 bad" in result.stdout
    print(
        f"{len(episodes)} episodes, {len(leftovers)} temporary leftovers, {elapsed:.1f}s of kills"
    )
