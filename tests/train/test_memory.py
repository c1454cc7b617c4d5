"""engine.memory: freed blocks stay in the heap, so a training-like step stops faulting pages in."""

from __future__ import annotations

import subprocess
import sys

import pytest
from teamvla_train.engine import memory

STEPS = r"""
import resource, sys
import numpy as np
from teamvla_train.engine.memory import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
def step():
    # A training step's pattern: large temporaries of different sizes, alive together, then freed.
    blocks = [np.ones(n * 2**20, np.uint8) for n in (3, 9, 5, 12, 7)]
    del blocks
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 40)
"""


def _faults_per_step(mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", STEPS, mode], capture_output=True, text=True, timeout=120, check=True
    )
    return float(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_retained_memory_is_not_faulted_in_again_each_step() -> None:
    default, retained = _faults_per_step("default"), _faults_per_step("retain")
    # 36 MiB allocated per step is about 9k pages; glibc's defaults fault a good part in again.
    assert default > 500, default
    assert retained < default / 10, (default, retained)


def test_other_platforms_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert memory.retain_freed_memory() is False
