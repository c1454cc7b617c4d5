"""Synthetic batches that follow the batch contract, for tests and benchmarks without a dataset.

The joint targets depend on the joint positions and the instruction (so a
model can learn them), the images are random but fixed per sample index.
Everything is a deterministic function of ``(seed, epoch, index)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from teamvla_data import batch as keys

from teamvla_train.normalization import Affine

INSTRUCTIONS = {
    "lift": "lift the cube with both arms",
    "handoff": "hand the cube from arm a to arm b",
    "drawer": "open the drawer and put the cube inside",
}


def synthetic_batch(
    *,
    batch_size: int,
    obs_history: int = 0,
    action_horizon: int = 8,
    num_joints: int = 7,
    image_size: tuple[int, int] = (96, 96),
    seed: int = 0,
    tasks: Sequence[str] = ("lift", "handoff", "drawer"),
    pad_fraction: float = 0.0,
) -> dict[str, torch.Tensor | list[str]]:
    """One batch of CPU tensors with the contract's keys, dtypes and shapes."""
    rng = np.random.default_rng(seed)
    b, to, ha, n = batch_size, obs_history + 1, action_horizon, num_joints
    h, w = image_size
    task_list = [tasks[i % len(tasks)] for i in rng.integers(0, len(tasks), size=b)]
    task_id = np.array([list(tasks).index(t) for t in task_list], dtype=np.float32)
    q_a = rng.normal(size=(b, to, n)).astype(np.float32)
    q_b = rng.normal(size=(b, to, n)).astype(np.float32)
    # A learnable target: motion towards a task-dependent pose, growing along the chunk.
    ramp = np.linspace(0.1, 1.0, ha, dtype=np.float32)[None, :, None]
    goal = np.sin(np.arange(n, dtype=np.float32)[None, :] + task_id[:, None])[:, None, :]
    action_a = (q_a[:, -1:, :] + ramp * (goal - q_a[:, -1:, :]) * 0.5).astype(np.float32)
    action_b = (q_b[:, -1:, :] + ramp * (-goal - q_b[:, -1:, :]) * 0.5).astype(np.float32)
    grip_a = (np.arange(ha)[None, :] >= (task_id[:, None] * 2)).astype(np.float32)
    grip_b = (np.arange(ha)[None, :] < (task_id[:, None] * 2 + 1)).astype(np.float32)
    obs_is_pad = np.zeros((b, to), dtype=bool)
    if obs_history:
        obs_is_pad[:, 0] = rng.random(b) < 0.3
    action_is_pad = np.zeros((b, ha), dtype=bool)
    if pad_fraction > 0:
        cut = rng.integers(1, ha + 1, size=b)
        has_pad = rng.random(b) < pad_fraction
        action_is_pad = has_pad[:, None] & (np.arange(ha)[None, :] >= cut[:, None])
    return {
        keys.RGB_A: torch.from_numpy(rng.integers(0, 256, size=(b, to, h, w, 3), dtype=np.uint8)),
        keys.RGB_B: torch.from_numpy(rng.integers(0, 256, size=(b, to, h, w, 3), dtype=np.uint8)),
        keys.Q_A: torch.from_numpy(q_a),
        keys.Q_B: torch.from_numpy(q_b),
        keys.OBS_IS_PAD: torch.from_numpy(obs_is_pad),
        keys.ACTION_A: torch.from_numpy(action_a),
        keys.ACTION_B: torch.from_numpy(action_b),
        keys.GRIP_A: torch.from_numpy(grip_a),
        keys.GRIP_B: torch.from_numpy(grip_b),
        keys.ACTION_IS_PAD: torch.from_numpy(action_is_pad),
        keys.INSTRUCTION: [INSTRUCTIONS.get(t, t) for t in task_list],
        keys.TASK: task_list,
        keys.EPISODE_INDEX: torch.from_numpy(rng.integers(0, 100, size=b).astype(np.int64)),
        keys.FRAME_INDEX: torch.from_numpy(rng.integers(0, 100, size=b).astype(np.int64)),
    }


@dataclass
class SyntheticData:
    """A :class:`teamvla_train.data.TrainData` look-alike serving :func:`synthetic_batch` batches.

    Batch ``i`` of epoch ``e`` on rank ``r`` is generated from a seed derived
    from ``(seed, e, i, r)``, so skipping to a position is free and exact.
    """

    batch_size: int
    obs_history: int = 0
    action_horizon: int = 8
    num_joints: int = 7
    image_size: tuple[int, int] = (96, 96)
    batches_per_epoch: int = 16
    val_batches_total: int = 2
    seed: int = 0
    rank: int = 0
    tasks: list[str] = field(default_factory=lambda: ["lift", "handoff", "drawer"])
    stats: dict | None = None

    @property
    def normalization(self) -> Affine:
        """Synthetic data is already "normalised": identity."""
        return Affine.identity(self.num_joints)

    @property
    def num_train_batches(self) -> int:
        """Micro-batches per epoch on this rank."""
        return self.batches_per_epoch

    def _batch(self, *tag: int) -> dict[str, torch.Tensor | list[str]]:
        seed = int(np.random.SeedSequence([self.seed, *tag]).generate_state(1)[0])
        return synthetic_batch(
            batch_size=self.batch_size,
            obs_history=self.obs_history,
            action_horizon=self.action_horizon,
            num_joints=self.num_joints,
            image_size=self.image_size,
            seed=seed,
            tasks=self.tasks,
            pad_fraction=0.3,
        )

    def train_batches(self, *, epoch: int, start_batch: int = 0) -> Iterator[dict]:
        """Batches ``start_batch ..`` of ``epoch``."""
        for i in range(start_batch, self.batches_per_epoch):
            yield self._batch(0, epoch, i, self.rank)

    def val_batches(self) -> Iterator[dict]:
        """The fixed validation batches."""
        for i in range(self.val_batches_total):
            yield self._batch(1, 0, i, self.rank)

    def close(self) -> None:
        """Nothing to release."""
