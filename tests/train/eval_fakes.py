"""Tiny stand-ins for the simulator and the policy, for the rollout/evaluation tests.

``LineEnv``: each arm has two joints; the instruction names a block (red or
blue) and the episode succeeds when arm A's joint for that block (0 = red,
1 = blue) reaches 1.0. Joints move toward the commanded target by at most
``speed`` per step. Images are 8x8 and encode the step count.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

N = 2
COLOURS = ("red", "blue")


def target_of(instruction: str) -> int:
    """Joint index of the block the instruction names."""
    return 1 if "blue" in instruction else 0


class LineEnv:
    """A deterministic toy world with the BimanualEnv interface."""

    def __init__(self, max_steps: int = 12, speed: float = 0.25) -> None:
        self.max_steps = max_steps
        self.speed = speed
        self.resets: list[tuple[str, int, str | None]] = []

    def reset(self, task: str, seed: int, instruction: str | None = None) -> dict[str, Any]:
        self.resets.append((task, seed, instruction))
        self.task = task
        self.instruction = instruction or f"lift the {COLOURS[seed % 2]} block"
        self.target = target_of(self.instruction)
        self.q = np.zeros(N, np.float32)
        self.t = 0
        return self._obs()

    def _obs(self) -> dict[str, Any]:
        img = np.full((8, 8, 3), self.t % 256, np.uint8)
        return {
            "rgb_a": img,
            "rgb_b": img,
            "q_a": self.q.copy(),
            "q_b": np.zeros(N, np.float32),
            "instruction": self.instruction,
            "task": self.task,
            "success": bool(self.q[self.target] >= 1.0),
        }

    def step(self, action: Mapping[str, Any]) -> tuple[dict[str, Any], bool, bool, dict[str, Any]]:
        assert action["action_a"].dtype == np.float32 and action["action_a"].shape == (N,)
        assert action["grip_a"] in (0.0, 1.0)
        delta = np.clip(np.asarray(action["action_a"]) - self.q, -self.speed, self.speed)
        self.q = (self.q + delta).astype(np.float32)
        self.t += 1
        obs = self._obs()
        return obs, obs["success"], self.t >= self.max_steps, {}


class ReachPolicy:
    """Predicts chunks that drive the named (or, language-blind, always the red) joint to 1.2."""

    def __init__(
        self,
        obs_history: int = 1,
        action_horizon: int = 6,
        *,
        use_language: bool = True,
        goal: float = 1.2,
    ):
        self.obs_history = obs_history
        self.action_horizon = action_horizon
        self.use_language = use_language
        self.goal = goal
        self.calls: list[dict[str, Any]] = []

    def predict_chunk(self, obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        self.calls.append(
            {
                "B": len(obs["instruction"]),
                "obs_is_pad": obs["obs_is_pad"].copy(),
                "shape": obs["rgb_a"].shape,
            }
        )
        b, ha = len(obs["instruction"]), self.action_horizon
        act = np.zeros((b, ha, N), np.float32)
        for i, text in enumerate(obs["instruction"]):
            j = target_of(text) if self.use_language else 0
            act[i, :, j] = self.goal
        grip = np.full((b, ha), 0.7, np.float32)
        return {"action_a": act, "action_b": np.zeros_like(act), "grip_a": grip, "grip_b": 1 - grip}
