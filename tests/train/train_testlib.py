"""Helpers of the teamvla-train tests: tiny episode datasets, tiny configs, tiny batches."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from teamvla_schema import EpisodeWriter

REPO = Path(__file__).resolve().parents[2]
N_JOINTS = 7
IMAGE = 16
INSTRUCTIONS = {
    "lift": "lift the cube",
    "handoff": "hand the cube over",
    "drawer": "open the drawer",
}

#: A small, fast model: every size shrunk, same structure as the default.
TINY_MODEL: dict[str, Any] = {
    "image_size": 16,
    "conv_channels": [8, 16],
    "vision_dim": 16,
    "text_buckets": 256,
    "text_dim": 16,
    "proprio_dim": 16,
    "hidden_dim": 64,
    "msg_dim": 16,
}


def write_tiny_dataset(
    root: Path,
    *,
    tasks: Sequence[str] = ("lift", "handoff"),
    episodes_per_task: int = 4,
    steps: int = 12,
    size: int = IMAGE,
    seed: int = 0,
) -> Path:
    """Episodes whose joint targets follow the joint positions (learnable) with random images."""
    rng = np.random.default_rng(seed)
    with EpisodeWriter(root) as writer:
        for ti, task in enumerate(tasks):
            for e in range(episodes_per_task):
                writer.start_episode({"task": task, "episode_id": f"ep{e:03d}"})
                q_a = rng.normal(size=N_JOINTS).astype(np.float32)
                q_b = rng.normal(size=N_JOINTS).astype(np.float32)
                goal = np.float32(ti + 1) * np.ones(N_JOINTS, np.float32)
                for t in range(steps):
                    act_a = (q_a + np.float32(0.2) * (goal - q_a)).astype(np.float32)
                    act_b = (q_b + np.float32(0.2) * (-goal - q_b)).astype(np.float32)
                    writer.add_step(
                        {
                            "rgb_a": rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8),
                            "rgb_b": rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8),
                            "q_a": q_a,
                            "q_b": q_b,
                            "action_a": act_a,
                            "action_b": act_b,
                            "grip_a": np.float32(t >= steps // 2),
                            "grip_b": np.float32(t < steps // 2),
                            "instruction": INSTRUCTIONS.get(task, task),
                            "task": task,
                            "success": t == steps - 1,
                        }
                    )
                    q_a, q_b = act_a, act_b
                writer.end_episode(success=True)
    return root


def tiny_config(
    root: Path, *, model_name: str = "single_brain", **sections: dict[str, Any]
) -> dict[str, Any]:
    """A complete config mapping for a few fast steps on ``root``; ``sections`` update it."""
    cfg: dict[str, Any] = {
        "run": {"seed": 0, "device": "cpu"},
        "dataset": {
            "roots": [str(root)],
            "obs_history": 1,
            "action_horizon": 4,
            "batch_size": 8,
            "num_workers": 0,
            "val_fraction": 0.25,
        },
        "model": {"name": model_name, **TINY_MODEL},
        "optim": {"lr": 3e-3},
        "scheduler": {"warmup_steps": 2},
        "trainer": {
            "max_steps": 12,
            "log_every": 1,
            "val_every": 6,
            "ckpt_every": 0,
            "num_threads": 1,
        },
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


def run_python(
    code: str, *, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter of this environment; capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=REPO,
    )


#: A tiny pixel run: 32 px cameras and encoders, small heads (the structure of the default).
TINY_PIXELS = [
    "env.obs_mode=pixels", "env.image_size=32", "env.num_envs=2", "model.image_size=32",
    "model.conv_channels=[8,16]", "model.vision_dim=16", "model.text_dim=16",
    "model.proprio_dim=16", "model.text_buckets=256", "trainer.ckpt_every=0",
    "trainer.log_every=5",
]  # fmt: skip


def tiny_pixel_config(algo: str, *extra: str) -> Any:
    """A tiny pixel config of ``configs/train_<algo>.yaml``."""
    mine = [f"{algo}.demos_per_task=1", f"{algo}.batch_size=16", f"{algo}.hidden_dims=[32,32]",
            f"{algo}.replay_capacity=400", f"{algo}.eval_episodes_per_task=0"]  # fmt: skip
    from teamvla_schema.config import load_config

    return load_config(REPO / "configs" / f"train_{algo}.yaml", [*TINY_PIXELS, *mine, *extra])


def torchrun(
    args: Sequence[str], *, nproc: int = 2, timeout: float = 240, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node nproc ARGS`` (gloo on CPU, one thread per rank),
    from the repository root; its output captured. After ``timeout`` seconds the launcher and its
    workers (its own process group) are killed and ``subprocess.TimeoutExpired`` is raised."""
    import signal

    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *args]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env=full_env, start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher's session: it and the ranks it started
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


#: A tiny state-observation SAC on lift for distributed tests (2 worlds per rank, 1-step returns:
#: every transition is in the replay at once).
TINY_STATE_SAC = [
    "sac.warmup_steps=40", "sac.batch_size=32", "sac.hidden_dims=[32,32]", "sac.demos_per_task=1",
    "sac.eval_episodes_per_task=2", "eval.every_env_steps=40", "sac.replay_capacity=1000",
    "env.num_envs=2", "sac.n_step=1", "trainer.log_every=5",
]  # fmt: skip


@pytest.fixture(autouse=True)
def one_torch_thread() -> Any:
    """One torch thread for a module's tests (import it there: autouse): tiny actor-critic
    networks on a shared 2-core machine are slower with more."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
