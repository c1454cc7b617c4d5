"""Small deterministic TeamVLA episodes for the converter tests (no simulator needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from teamvla_schema import EpisodeWriter, find_episodes, read_episode

REPO = Path(__file__).resolve().parents[2]
#: Datasets written by the real LeRobot and robomimic (scripts/make_interop_fixtures.py).
FIXTURES = REPO / "tests" / "fixtures" / "interop"

INSTRUCTIONS = {"lift": "lift the red block", "handoff": "hand the blue block over"}


def frames(seed: int, steps: int, size: int) -> np.ndarray:
    """Smooth moving gradients (video-friendly) plus a little noise: uint8 [T, H, W, 3]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    out = np.empty((steps, size, size, 3), np.uint8)
    for t in range(steps):
        out[t, ..., 0] = (4 * x + 3 * t + seed) % 256
        out[t, ..., 1] = (4 * y + 5 * t) % 256
        out[t, ..., 2] = (2 * x + 2 * y + 7 * seed) % 256
    return out ^ rng.integers(0, 4, out.shape, dtype=np.uint8)


def write_episodes(
    root: Path,
    *,
    per_task: int = 2,
    steps: int = 6,
    size: int = 16,
    joints: int = 4,
    extras: bool = False,
    timestamps: bool = False,
) -> list[Path]:
    """``per_task`` episodes of lift and handoff under ``root``; ``extras`` adds phase, depth and reward."""
    paths = []
    with EpisodeWriter(root) as w:
        for k, task in enumerate(INSTRUCTIONS):
            for i in range(per_task):
                seed = 10 * k + i
                rng = np.random.default_rng(seed)
                cams = frames(seed, steps, size), frames(seed + 100, steps, size)
                w.start_episode({"task": task, "user": {"seed": seed, "operator": "test"}})
                for t in range(steps):
                    step: dict[str, Any] = {
                        "rgb_a": cams[0][t],
                        "rgb_b": cams[1][t],
                        "q_a": rng.standard_normal(joints).astype(np.float32),
                        "q_b": rng.standard_normal(joints).astype(np.float32),
                        "action_a": rng.standard_normal(joints).astype(np.float32),
                        "action_b": rng.standard_normal(joints).astype(np.float32),
                        "grip_a": np.float32(t > 2),
                        "grip_b": np.float32(rng.random()),
                        "instruction": INSTRUCTIONS[task],
                        "task": task,
                        "success": t == steps - 1,
                    }
                    if extras:
                        step["phase"] = ["approach", "grasp", "lift"][t % 3]
                        step["depth_a"] = rng.random((size, size)).astype(np.float32)
                        step["reward"] = np.float32(t / 8)
                        step["done"] = t == steps - 1
                    if timestamps:
                        step["timestamp"] = 0.1 * t + 0.003 * rng.random()
                    w.add_step(step)
                paths.append(w.end_episode())
    return paths


def same_episodes(a: Path, b: Path) -> None:
    """Assert the two roots hold the same episodes: metadata and every array bit-exact."""
    pa, pb = find_episodes(a), find_episodes(b)
    assert [p.relative_to(a) for p in pa] == [p.relative_to(b) for p in pb]
    for x, y in zip(pa, pb, strict=True):
        ex, ey = read_episode(x), read_episode(y)
        assert ex.meta == ey.meta, (x, ex.meta, ey.meta)
        assert list(ex.arrays) == list(ey.arrays), x
        for name in ex.arrays:
            assert ex.arrays[name].dtype == ey.arrays[name].dtype, (x, name)
            np.testing.assert_array_equal(ex.arrays[name], ey.arrays[name], err_msg=f"{x} {name}")
