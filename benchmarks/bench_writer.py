#!/usr/bin/env python3
"""Episode writing throughput: EpisodeWriter versus bare ``numpy.savez_compressed``.

    python benchmarks/bench_writer.py            # 20 episodes x 100 steps, two 96x96 cameras, N=7
    python benchmarks/bench_writer.py --quick    # a tiny run (smoke test)

Each method writes the same synthetic episodes (smooth images: gradients and a moving
blob, not noise, so that compression behaves as on real renders):

* ``savez`` (the baseline): ``numpy.savez_compressed`` of the already-stacked arrays;
* ``EpisodeWriter``: ``start_episode`` + one validated ``add_step`` per step +
  ``end_episode`` (stacking, atomic write with fsync and rename);
* ``write_episode_arrays``: the writer's file output alone (no per-step validation,
  no stacking), to split the overhead;
* ``seed layout``: the seed's format, ``savez_compressed`` of an object array of per-step
  dicts (pickled). Write only: this benchmark never unpickles anything;
* ``validate_step`` alone, for every step (no file IO).

Throughput is in steps/s and MB/s of *uncompressed* payload (the bytes of the step
arrays); ``vs savez`` is the time relative to the baseline. Every method runs
``--repeat`` times over all episodes, interleaved, and the fastest run counts.
The issue's goal: validation + atomic writing add less than 10% to the bare savez time.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from teamvla_schema import (
    EpisodeMeta,
    EpisodeWriter,
    step_layout,
    validate_step,
    write_episode_arrays,
)

GOAL = 0.10  # validation + atomic writing may add at most 10% to bare savez


# --------------------------------------------------------------------------- synthetic data


def smooth_frames(num_steps: int, size: int, camera: int) -> np.ndarray:
    """uint8[T, size, size, 3]: a lit gradient background with a blob moving smoothly over time."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    t = np.arange(num_steps, dtype=np.float32)[:, None, None]
    cx = 0.5 + 0.3 * np.sin(0.07 * t + camera)
    cy = 0.5 + 0.25 * np.cos(0.05 * t + 2 * camera)
    blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.02)
    shade = 0.6 + 0.4 * np.cos(3.0 * x + 2.0 * y + 0.5 * camera)
    r = 50 + 150 * blob + 30 * shade
    g = 40 + 120 * x * shade + 20 * (1 - blob)
    b = 90 + 100 * y * (1 - blob)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def make_episode(seed: int, num_steps: int, size: int, joints: int) -> dict[str, np.ndarray]:
    """The stacked columns of one episode (every method writes exactly these values)."""
    t = np.arange(num_steps, dtype=np.float32)[:, None]
    phase = np.arange(joints, dtype=np.float32)[None, :] + seed
    q_a = (0.5 * np.sin(0.05 * t + phase)).astype(np.float32)
    q_b = (0.5 * np.cos(0.04 * t + phase)).astype(np.float32)
    grip = (np.arange(num_steps) > num_steps // 2).astype(np.float32)
    return {
        "rgb_a": smooth_frames(num_steps, size, camera=2 * seed),
        "rgb_b": smooth_frames(num_steps, size, camera=2 * seed + 1),
        "q_a": q_a,
        "q_b": q_b,
        "action_a": np.roll(q_a, -1, axis=0),
        "action_b": np.roll(q_b, -1, axis=0),
        "grip_a": grip,
        "grip_b": grip[::-1].copy(),
        "instruction": np.array(["lift the red block"] * num_steps),
        "task": np.array(["lift"] * num_steps),
        "success": np.arange(num_steps) == num_steps - 1,
    }


def episode_steps(columns: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per-step dicts as a recorder would produce them (arrays are views into the columns)."""
    num_steps = len(columns["q_a"])
    steps = []
    for i in range(num_steps):
        step: dict[str, Any] = {}
        for name, col in columns.items():
            value = col[i]
            if col.dtype.kind == "U":
                value = str(value)
            elif col.dtype == np.bool_:
                value = bool(value)
            step[name] = value
        steps.append(step)
    return steps


# --------------------------------------------------------------------------- methods


def run_savez(
    out: Path, episodes: list[dict[str, np.ndarray]], steps: list[list[dict[str, Any]]]
) -> None:
    for k, columns in enumerate(episodes):
        np.savez_compressed(out / f"savez_{k:04d}.npz", **columns)


def run_writer(
    out: Path, episodes: list[dict[str, np.ndarray]], steps: list[list[dict[str, Any]]]
) -> None:
    with EpisodeWriter(out / "writer", overwrite=True) as writer:
        for k, episode in enumerate(steps):
            writer.start_episode({"task": "lift", "episode_id": f"lift-{k:06d}"})
            for step in episode:
                writer.add_step(step)
            writer.end_episode()


def run_write_arrays(
    out: Path, episodes: list[dict[str, np.ndarray]], steps: list[list[dict[str, Any]]]
) -> None:
    for k, columns in enumerate(episodes):
        meta = EpisodeMeta("lift", f"lift-{k:06d}", True, len(columns["q_a"]))
        write_episode_arrays(out / f"arrays_{k:04d}.npz", meta, columns, overwrite=True)


def run_seed_layout(
    out: Path, episodes: list[dict[str, np.ndarray]], steps: list[list[dict[str, Any]]]
) -> None:
    # The seed's format: object arrays holding the metadata dict and the per-step dicts
    # (numpy pickles them). Written only; nothing here ever loads one back.
    for k, episode in enumerate(steps):
        meta = np.empty(1, dtype=object)
        meta[0] = {"task": "lift", "episode_id": f"lift-{k:06d}", "success": True, "version": 0}
        objs = np.empty(len(episode), dtype=object)
        objs[:] = episode
        np.savez_compressed(out / f"seed_{k:04d}.npz", meta=meta, steps=objs)


def run_validate(
    out: Path, episodes: list[dict[str, np.ndarray]], steps: list[list[dict[str, Any]]]
) -> None:
    for episode in steps:
        layout = None
        for i, step in enumerate(episode):
            clean = validate_step(step, step_index=i, layout=layout)
            if layout is None:
                layout = step_layout(clean)


def run_writer_no_fsync(
    out: Path, episodes: list[dict[str, np.ndarray]], steps: list[list[dict[str, Any]]]
) -> None:
    # Diagnostic only: how much of the writer's time is the disk flushing each file.
    # (Never do this for real data: without fsync a crash can lose a "written" episode.)
    real_fsync = os.fsync
    os.fsync = lambda fd: None  # type: ignore[assignment]
    try:
        run_writer(out, episodes, steps)
    finally:
        os.fsync = real_fsync


@dataclass
class Method:
    name: str
    run: Callable[[Path, list[dict[str, np.ndarray]], list[list[dict[str, Any]]]], None]
    writes: str | None  # glob of the files it writes, for the size column


BASELINE = "savez_compressed (baseline)"
WRITER = "EpisodeWriter (validate+atomic+fsync)"
VALIDATE = "validate_step only (no IO)"
METHODS = [
    Method(BASELINE, run_savez, "savez_*.npz"),
    Method(WRITER, run_writer, "writer/lift/*.npz"),
    Method("write_episode_arrays (atomic+fsync)", run_write_arrays, "arrays_*.npz"),
    Method("seed layout (pickled dicts)", run_seed_layout, "seed_*.npz"),
    Method(VALIDATE, run_validate, None),
    Method("EpisodeWriter, fsync off (diagnostic)", run_writer_no_fsync, "writer/lift/*.npz"),
]


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--size", type=int, default=96, help="camera image height and width")
    parser.add_argument("--joints", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="runs per method; the fastest counts")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write (default: a temporary folder)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny run: 2 episodes x 10 steps of 32x32, 1 repeat"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes, args.steps, args.size, args.repeat = 2, 10, 32, 1

    episodes = [make_episode(k, args.steps, args.size, args.joints) for k in range(args.episodes)]
    steps = [episode_steps(columns) for columns in episodes]
    payload = sum(arr.nbytes for columns in episodes for arr in columns.values())
    total_steps = args.episodes * args.steps

    base = Path(tempfile.mkdtemp(prefix="bench_writer_", dir=args.dir))
    best: dict[str, float] = {}
    cpu: dict[str, float] = {}
    sizes: dict[str, int] = {}
    try:
        for _ in range(args.repeat):
            for method in METHODS:
                out = base / "run"
                out.mkdir()
                start, start_cpu = time.perf_counter(), time.process_time()
                method.run(out, episodes, steps)
                elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
                if elapsed < best.get(method.name, float("inf")):
                    best[method.name], cpu[method.name] = elapsed, elapsed_cpu
                if method.writes:
                    sizes[method.name] = sum(p.stat().st_size for p in out.glob(method.writes))
                shutil.rmtree(out)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print(
        f"{args.episodes} episodes x {args.steps} steps, two {args.size}x{args.size} cameras, N={args.joints}: "
        f"{payload / 1e6:.1f} MB uncompressed payload; best of {args.repeat}"
    )
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, {os.cpu_count()} CPUs"
    )
    header = f"{'method':<40} {'seconds':>8} {'CPU s':>7} {'steps/s':>9} {'MB/s':>8} {'vs savez':>9} {'file MB':>8}"
    print(header)
    print("-" * len(header))
    baseline = best[BASELINE]
    for method in METHODS:
        t = best[method.name]
        size = f"{sizes[method.name] / 1e6:8.2f}" if method.name in sizes else f"{'-':>8}"
        print(
            f"{method.name:<40} {t:8.3f} {cpu[method.name]:7.2f} {total_steps / t:9.0f} "
            f"{payload / 1e6 / t:8.1f} {t / baseline:8.2f}x {size}"
        )
    overhead = best[WRITER] / baseline - 1
    verdict = "met" if overhead < GOAL else "MISSED"
    print(
        f"EpisodeWriter overhead vs bare savez: {overhead:+.1%} (goal < {GOAL:.0%}: {verdict}); "
        f"validation alone: {best[VALIDATE] / baseline:.1%} of the savez time"
    )
    print(
        "(seconds: wall time of the fastest run; CPU s: process CPU time of that run, all threads)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
