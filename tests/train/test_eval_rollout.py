"""Closed-loop rollout mechanics on a toy env: batching, windows, re-planning, step limits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from teamvla_train.rollout import EpisodeSpec, run_rollouts

# --------------------------------------------------------------------------- fakes
# LineEnv: each arm has two joints; the instruction names a block (red or blue) and the
# episode succeeds when arm A's joint for that block (0 = red, 1 = blue) reaches 1.0.
# Joints move toward the commanded target by at most ``speed`` per step. Images are 8x8.

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


def test_success_stops_episode_early_and_results_keep_order():
    policy = ReachPolicy()
    specs = [EpisodeSpec("lift", s) for s in range(5)]
    res = run_rollouts(policy, LineEnv, specs, batch_envs=2, replan_every=2)
    assert [r.spec for r in res] == specs
    # 0.25 per step to reach 1.0 -> success after exactly 4 steps.
    assert all(r.success and r.steps == 4 for r in res)
    # Groups of 2, 2, 1; each group re-plans at steps 0 and 2.
    assert [c["B"] for c in policy.calls] == [2, 2, 2, 2, 1, 1]


def test_rollout_respects_the_task_step_limit():
    policy = ReachPolicy(goal=0.5)  # never reaches 1.0
    res = run_rollouts(
        policy, lambda: LineEnv(max_steps=7), [EpisodeSpec("lift", 0)], replan_every=3
    )
    assert res[0].steps == 7 and not res[0].success and res[0].step_limit == 7
    # An explicit cap below the task's limit wins.
    res = run_rollouts(
        policy, lambda: LineEnv(max_steps=7), [EpisodeSpec("lift", 0)], replan_every=3, max_steps=5
    )
    assert res[0].steps == 5 and res[0].step_limit == 5


def test_observation_window_is_padded_at_the_start():
    policy = ReachPolicy(obs_history=2, goal=0.5)
    run_rollouts(policy, lambda: LineEnv(max_steps=6), [EpisodeSpec("lift", 0)], replan_every=1)
    pads = [c["obs_is_pad"][0].tolist() for c in policy.calls]
    assert pads[0] == [True, True, False]
    assert pads[1] == [True, False, False]
    assert all(p == [False, False, False] for p in pads[2:])
    assert policy.calls[0]["shape"] == (1, 3, 8, 8, 3)


def test_replan_every_is_capped_by_the_horizon():
    policy = ReachPolicy(action_horizon=3, goal=0.5)
    run_rollouts(policy, lambda: LineEnv(max_steps=9), [EpisodeSpec("lift", 0)], replan_every=100)
    assert len(policy.calls) == 3  # steps 0, 3, 6


def test_temporal_ensemble_replans_every_step():
    policy = ReachPolicy(goal=1.2)
    res = run_rollouts(policy, LineEnv, [EpisodeSpec("lift", 0)], temporal_ensemble=0.1)
    assert res[0].success and len(policy.calls) == res[0].steps


def test_swapped_instruction_reaches_env_and_policy():
    env = LineEnv()
    policy = ReachPolicy()
    res = run_rollouts(policy, lambda: env, [EpisodeSpec("lift", 0, "lift the blue block")])
    assert env.resets == [("lift", 0, "lift the blue block")]
    assert res[0].instruction == "lift the blue block" and res[0].success
    blind = run_rollouts(
        ReachPolicy(use_language=False), LineEnv, [EpisodeSpec("lift", 0, "lift the blue block")]
    )
    assert not blind[0].success


def test_recording_keeps_frames_of_selected_episodes():
    specs = [EpisodeSpec("lift", s) for s in range(3)]
    res = run_rollouts(ReachPolicy(), LineEnv, specs, batch_envs=3, record=lambda s: s.seed == 1)
    assert res[0].frames is None and res[2].frames is None
    frames = res[1].frames
    assert frames is not None and len(frames) == res[1].steps + 1
    assert frames[0].shape == (8, 16, 3) and frames[0].dtype == np.uint8


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="batch_envs"):
        run_rollouts(ReachPolicy(), LineEnv, [], batch_envs=0)
    with pytest.raises(ValueError, match="temporal_ensemble"):
        run_rollouts(ReachPolicy(), LineEnv, [], temporal_ensemble=-1.0)
