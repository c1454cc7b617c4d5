"""generate_dataset's worker processes: an unguarded script or a dead worker is an error, never a hang."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest


def _run_script(tmp_path: Path, body: str, timeout: float) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "record_script.py"
    script.write_text(textwrap.dedent(body), encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(90)
def test_unguarded_script_fails_fast_naming_the_main_guard(tmp_path: Path) -> None:
    # As docs/sim.md shows it, pasted into a plain script without `if __name__ == "__main__":`.
    start = time.monotonic()
    proc = _run_script(
        tmp_path,
        """
        from teamvla_data.sim import generate_dataset
        generate_dataset("ds", tasks=("lift",), episodes_per_task=2, seed=0, workers=2,
                         image_size=24, progress=False)
        print("RETURNED")
        """,
        timeout=60,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    assert "RETURNED" not in proc.stdout
    assert elapsed < 30, f"took {elapsed:.1f} s"
    last = proc.stderr.strip().splitlines()[-1]
    assert 'if __name__ == "__main__":' in last, proc.stderr[-2000:]


@pytest.mark.timeout(120)
def test_guarded_script_with_two_workers_works(tmp_path: Path) -> None:
    proc = _run_script(
        tmp_path,
        """
        from teamvla_data.sim import generate_dataset
        if __name__ == "__main__":
            paths = generate_dataset("ds", tasks=("lift",), episodes_per_task=2, seed=0,
                                     workers=2, image_size=24, progress=False)
            print(len(paths), all(p.is_file() for p in paths))
        """,
        timeout=100,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "2 True"


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
@pytest.mark.timeout(120)
def test_a_killed_worker_surfaces_as_an_error(tmp_path: Path) -> None:
    script = tmp_path / "record_many.py"
    script.write_text(
        textwrap.dedent(
            """
            from teamvla_data.sim import generate_dataset
            if __name__ == "__main__":
                generate_dataset("ds", tasks=("lift", "handoff", "drawer"), episodes_per_task=400,
                                 seed=0, workers=2, image_size=24, progress=False)
                print("RETURNED")
            """
        ),
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until the first episodes are on disk, so the workers are busy recording.
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob("ds/*/*.npz")) and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = [c for c in _children(proc.pid) if c]
        assert workers, "no worker processes found"
        # The spawn context also starts a resource tracker; kill every child that records.
        victim = max(workers)
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert "RETURNED" not in out
    assert "worker process of generate_dataset died" in err, err[-2000:]
