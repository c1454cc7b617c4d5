"""Synthetic episodes for the teamvla-data tests (helpers; fixtures live in conftest.py) (tiny images, few steps).

Values encode where they came from so tests can check gathers exactly: for
episode ``seed`` s and step t, ``q_a[t] = s * 1000 + t + 0.25 * j`` (j = joint),
``q_b = -q_a``, ``action_a[t] = q_a[t] + 0.5``, ``action_b = -action_a``,
``grip_a[t] = t % 2``, ``grip_b = 1 - grip_a``, every pixel of ``rgb_a[t]`` is
``(s * 31 + t) % 256`` and ``rgb_b = 255 - rgb_a``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from teamvla_schema import EpisodeWriter

N_JOINTS = 7
IMAGE = 16


def step_values(seed: int, t: int, n: int = N_JOINTS, size: int = IMAGE) -> dict[str, np.ndarray]:
    """The arrays of step ``t`` of the episode with ``seed`` (see the module docstring)."""
    q = (seed * 1000 + t + 0.25 * np.arange(n)).astype(np.float32)
    pix = (seed * 31 + t) % 256
    rgb = np.full((size, size, 3), pix, np.uint8)
    return {
        "rgb_a": rgb,
        "rgb_b": 255 - rgb,
        "q_a": q,
        "q_b": -q,
        "action_a": q + np.float32(0.5),
        "action_b": -(q + np.float32(0.5)),
        "grip_a": np.float32(t % 2),
        "grip_b": np.float32(1 - t % 2),
    }


def write_episode(
    root: Path,
    task: str,
    episode_id: str,
    *,
    seed: int = 0,
    steps: int = 5,
    success: bool = True,
    instruction: str | None = None,
    n: int = N_JOINTS,
    size: int = IMAGE,
    compress: bool = True,
    overwrite: bool = False,
    image_codec: str | None = None,
) -> Path:
    """Write one synthetic episode to ``root/<task>/<episode_id>.npz``."""
    with EpisodeWriter(root, compress=compress, overwrite=overwrite, image_codec=image_codec) as w:
        w.start_episode({"task": task, "episode_id": episode_id, "user": {"seed": seed}})
        for t in range(steps):
            w.add_step(
                {
                    **step_values(seed, t, n, size),
                    "instruction": instruction or f"do {task} {episode_id}",
                    "task": task,
                    "success": success and t == steps - 1,
                }
            )
        return w.end_episode(success=success)


def write_many(root: Path, specs: Iterable[tuple[str, str, int, int]], **kw: object) -> list[Path]:
    """Write episodes from (task, episode_id, seed, steps) tuples, in the given order."""
    return [
        write_episode(root, task, eid, seed=seed, steps=steps, **kw)
        for task, eid, seed, steps in specs
    ]  # type: ignore[arg-type]


#: A small multi-task set: (task, episode_id, seed, steps).
SPECS: list[tuple[str, str, int, int]] = [
    ("lift", "ep0", 1, 5),
    ("lift", "ep1", 2, 3),
    ("lift", "ep2", 3, 4),
    ("lift", "ep3", 4, 6),
    ("handoff", "ep0", 5, 4),
    ("handoff", "ep1", 6, 2),
    ("drawer", "a", 7, 5),
    ("drawer", "b", 8, 3),
]
