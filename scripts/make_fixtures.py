#!/usr/bin/env python3
"""Regenerate the checked-in test fixtures, byte for byte, with numpy and teamvla-schema only.

    python scripts/make_fixtures.py            # writes tests/fixtures/...
    python scripts/make_fixtures.py --out DIR  # writes DIR/data/... and DIR/checkpoints/...

Outputs:

* ``data/lift_sample.npz``: a minimal valid episode: 4 steps of two 32x32 cameras with
  smooth synthetic content (a red block rising over a gradient table), N=7 joints,
  instruction "lift the red block", phase labels and timestamps. Stored uncompressed so
  that its bytes do not depend on the zlib build.
* ``checkpoints/bc_stub.ckpt``: a synthetic behaviour-cloning checkpoint: a small fake
  model state dict, an AdamW-like optimiser state (integer parameter keys), a cosine
  scheduler state, the training state (epoch, step, numpy RNG state), a config snapshot
  and normalisation statistics.

Everything is computed with integer arithmetic and exact binary fractions (no
transcendental functions, no floating-point RNG draws), so the bytes are identical on
every platform; a test regenerates both files and compares them with the checked-in ones.
torch is never imported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from teamvla_schema import (
    EpisodeMeta,
    save_checkpoint,
    step_layout,
    validate_step,
    write_episode_arrays,
)

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
EPISODE_PATH = Path("data") / "lift_sample.npz"
CHECKPOINT_PATH = Path("checkpoints") / "bc_stub.ckpt"

NUM_STEPS = 4
IMAGE_SIZE = 32
NUM_JOINTS = 7
INSTRUCTION = "lift the red block"
PHASES = ("approach", "grasp", "lift", "hold")


# --------------------------------------------------------------------------- episode


def camera_image(t: int, camera: int) -> np.ndarray:
    """A smooth uint8[32, 32, 3] frame: gradient background, a red block lifted a bit each step."""
    s = IMAGE_SIZE
    y, x = np.mgrid[0:s, 0:s].astype(np.int32)
    img = np.empty((s, s, 3), np.int32)
    img[..., 0] = 40 + 2 * x + camera * 16  # red grows to the right
    img[..., 1] = 60 + 3 * y // 2  # green grows downwards (the table)
    img[..., 2] = 200 - (x + y) * 2  # blue fades diagonally
    top = 18 - 3 * t  # the block rises as the episode goes on
    left = 12 + 2 * camera  # each camera sees it from a slightly different place
    block = (y >= top) & (y < top + 8) & (x >= left) & (x < left + 8)
    img[block] = (200, 30, 30)
    return np.clip(img, 0, 255).astype(np.uint8)


def episode_steps() -> list[dict[str, Any]]:
    steps = []
    for t in range(NUM_STEPS):
        joints = np.arange(NUM_JOINTS, dtype=np.float32)
        q_a = (joints * 0.125 + t * 0.0625).astype(np.float32)  # exact binary fractions
        q_b = (-joints * 0.125 + t * 0.03125).astype(np.float32)
        steps.append(
            {
                "rgb_a": camera_image(t, 0),
                "rgb_b": camera_image(t, 1),
                "q_a": q_a,
                "q_b": q_b,
                "action_a": q_a + np.float32(0.0625),
                "action_b": q_b + np.float32(0.03125),
                "grip_a": np.float32(0.0 if t < 1 else 1.0),
                "grip_b": np.float32(0.0),
                "instruction": INSTRUCTION,
                "task": "lift",
                "success": t == NUM_STEPS - 1,
                "phase": PHASES[t],
                "timestamp": 0.125 * t,
            }
        )
    return steps


def write_episode_fixture(path: Path) -> Path:
    layout = None
    clean = []
    for i, step in enumerate(episode_steps()):
        c = validate_step(step, step_index=i, layout=layout)
        layout = layout or step_layout(c)
        clean.append(c)
    arrays = {}
    for name, value in clean[0].items():
        column = [c[name] for c in clean]
        arrays[name] = np.array(column) if isinstance(value, str | bool) else np.stack(column)
    meta = EpisodeMeta(
        task="lift",
        episode_id="lift_sample",
        success=bool(clean[-1]["success"]),
        num_steps=len(clean),
        user={
            "generator": "scripts/make_fixtures.py",
            "note": "synthetic fixture, not a recording",
        },
    )
    return write_episode_arrays(path, meta, arrays, compress=False, overwrite=True)


# --------------------------------------------------------------------------- checkpoint


def _weights(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Small float32 weights that are exact binary fractions (k / 256, |k| < 128)."""
    return (rng.integers(-128, 128, size=shape, dtype=np.int64) / 256).astype(np.float32)


def checkpoint_sections() -> dict[str, Any]:
    rng = np.random.default_rng(20240611)
    n2 = 2 * NUM_JOINTS
    model = {
        "encoder.conv1.weight": _weights(rng, 8, 3, 3, 3),
        "encoder.conv1.bias": _weights(rng, 8),
        "encoder.norm.weight": np.ones(8, np.float32),
        "encoder.norm.bias": np.zeros(8, np.float32),
        "encoder.norm.running_mean": _weights(rng, 8),
        "encoder.norm.running_var": np.ones(8, np.float32),
        "encoder.norm.num_batches_tracked": np.array(120, np.int64),
        "text.embedding.weight": _weights(rng, 64, 16),
        "fusion.weight": _weights(rng, 32, 8 + 16 + n2),
        "fusion.bias": np.zeros(32, np.float32),
        "head.weight": _weights(rng, n2 + 2, 32),
        "head.bias": np.zeros(n2 + 2, np.float32),
    }
    params = list(model)
    trainable = [
        n for n in params if not n.startswith("encoder.norm.running") and "num_batches" not in n
    ]
    state = {}
    for index, name in enumerate(trainable):
        shape = model[name].shape
        state[index] = {
            "step": np.array(120.0, np.float32),
            "exp_avg": _weights(rng, *shape) / np.float32(16),
            "exp_avg_sq": np.abs(_weights(rng, *shape)) / np.float32(1024),
        }
    optimizer = {
        "state": state,
        "param_groups": [
            {
                "lr": 0.0002,
                "betas": (0.9, 0.999),
                "eps": 1e-08,
                "weight_decay": 0.01,
                "amsgrad": False,
                "maximize": False,
                "foreach": None,
                "capturable": False,
                "differentiable": False,
                "fused": None,
                "initial_lr": 0.0003,
                "params": list(range(len(trainable))),
            }
        ],
    }
    scheduler = {
        "T_max": 400,
        "eta_min": 0.0,
        "base_lrs": [0.0003],
        "last_epoch": 120,
        "_step_count": 121,
        "_get_lr_called_within_step": False,
        "_last_lr": [0.0002],
    }
    sampler_rng = np.random.default_rng(7)
    sampler_rng.integers(1 << 30, size=3)  # advance it, as a trainer would have
    training_state = {
        "epoch": 3,
        "step": 120,
        "batch_in_epoch": 0,
        "best_val_loss": float("nan"),  # no validation split in the stub
        "rng": {"numpy": sampler_rng.bit_generator.state},
    }
    config = {
        "seed": 0,
        "device": "cpu",
        "dataset": {"roots": ["data/episodes"], "tasks": ["lift"], "batch_size": 8, "seed": 0},
        "model": {
            "name": "single_brain",
            "hidden_dim": 32,
            "image_size": IMAGE_SIZE,
            "num_joints": NUM_JOINTS,
        },
        "optim": {"name": "adamw", "lr": 0.0003, "weight_decay": 0.01, "betas": [0.9, 0.999]},
        "scheduler": {"name": "cosine", "t_max": 400, "eta_min": 0.0},
        "trainer": {"epochs": 10, "grad_clip": 1.0},
    }
    fields = {}
    for name in ("q_a", "q_b", "action_a", "action_b"):
        j = np.arange(NUM_JOINTS, dtype=np.float64)
        fields[name] = {
            "mean": (j * 0.125).tolist(),
            "std": np.full(NUM_JOINTS, 0.5).tolist(),
            "min": (j * 0.125 - 1).tolist(),
            "max": (j * 0.125 + 1).tolist(),
            "p01": (j * 0.125 - 0.875).tolist(),
            "p99": (j * 0.125 + 0.875).tolist(),
            "count": 400,
        }
    stats = {
        "format": "teamvla-stats",
        "version": 1,
        "key": "fixture",
        "mode": "mean_std",
        "num_episodes": 10,
        "fields": fields,
        "extra": {},
    }
    return {
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "training_state": training_state,
        "config": config,
        "stats": stats,
        "extra": {
            "task": "lift",
            "tasks": ["lift"],
            "note": "synthetic stub written by scripts/make_fixtures.py",
        },
    }


def write_checkpoint_fixture(path: Path) -> Path:
    return save_checkpoint(path, **checkpoint_sections())


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"fixtures folder (default: {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    episode = write_episode_fixture(args.out / EPISODE_PATH)
    checkpoint = write_checkpoint_fixture(args.out / CHECKPOINT_PATH)
    for path in (episode, checkpoint):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
