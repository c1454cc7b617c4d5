"""Closed-loop evaluation in the real simulator with scripted "oracle" policies.

The oracle wraps the task's scripted expert as a chunk policy. The
language-aware oracle follows whatever instruction the env was given; the
language-blind one always goes for the block of the seed's own instruction.
Both succeed normally; only the language-aware one survives the swap, which
shows the swap is judged against the *new* instruction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

from teamvla_data.sim.config import WorldConfig
from teamvla_data.sim.experts import make_expert
from teamvla_data.sim.language import parse_target
from teamvla_data.sim.layout import COLORS
from teamvla_data.sim.seeds import eval_seeds, is_eval_seed
from teamvla_data.sim.world import BimanualEnv
from teamvla_train.config import EvalConfig
from teamvla_train.evaluation import closed_loop_eval

WORLD = WorldConfig(render=False)  # the experts need no pixels: fast


class TrackingEnv(BimanualEnv):
    """A BimanualEnv that remembers its last reset (so the oracle knows task and seed)."""

    def reset(self, task: str, seed: int, instruction: str | None = None) -> dict[str, Any]:
        self.last_reset = (task, seed, instruction)
        return super().reset(task, seed, instruction=instruction)


class ExpertOracle:
    """The scripted expert as a one-step-chunk policy; drives the single env of a group."""

    obs_history = 0
    action_horizon = 1

    def __init__(self, envs: list[TrackingEnv], *, language_blind: bool = False) -> None:
        self.envs = envs
        self.language_blind = language_blind
        self.probe = BimanualEnv(WORLD)
        self.instructions_seen: list[str] = []

    def predict_chunk(self, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        assert len(obs["instruction"]) == 1, "the oracle drives one env at a time (batch_envs=1)"
        env = self.envs[-1]
        state = env.state
        if state.t == 0:
            task, seed, _ = env.last_reset
            self.instructions_seen.append(obs["instruction"][0])
            self.expert = make_expert(task, np.random.default_rng(seed))
            own = self.probe.reset(task, seed)["instruction"]  # the seed's own instruction
            self.own_target = COLORS.index(parse_target(own))
        if self.language_blind:
            state = state.copy()
            state.target = self.own_target  # ignore what the instruction says
        action = self.expert.act(state)
        return {k: np.asarray(v, np.float32)[None, None] for k, v in action.items()}  # (1, 1, ...)


def _evaluate(language_blind: bool, episodes: int = 6) -> tuple[dict[str, Any], ExpertOracle]:
    envs: list[TrackingEnv] = []

    def make_env() -> TrackingEnv:
        envs.append(TrackingEnv(WORLD))
        return envs[-1]

    oracle = ExpertOracle(envs, language_blind=language_blind)
    cfg = EvalConfig(episodes_per_task=episodes, batch_envs=1, replan_every=1)
    out = closed_loop_eval(oracle, make_env, cfg, progress=False)
    return {task: o.to_dict() for task, o in out.items()}, oracle


def test_oracle_succeeds_with_and_without_swap():
    results, oracle = _evaluate(language_blind=False)
    for task, r in results.items():
        assert r["episodes"] == 6 and r["swap_episodes"] == 6
        assert r["success_rate"] == 1.0, task
        assert r["swap_success_rate"] == 1.0, task
        assert r["seeds"] == eval_seeds(task, 6) and all(is_eval_seed(s) for s in r["seeds"])
    # The swapped instructions really reached the policy: each names the other block.
    normal, swapped = oracle.instructions_seen[:6], oracle.instructions_seen[6:12]
    assert [parse_target(a) != parse_target(b) for a, b in zip(normal, swapped, strict=True)] == [
        True
    ] * 6


def test_language_blind_policy_fails_the_swap():
    results, _ = _evaluate(language_blind=True)
    for task, r in results.items():
        assert r["success_rate"] == 1.0, task  # it does the task...
        assert r["swap_success_rate"] == 0.0, (
            task
        )  # ...but on the block the instruction no longer names


def test_swap_can_be_turned_off():
    envs: list[TrackingEnv] = []

    def make_env() -> TrackingEnv:
        envs.append(TrackingEnv(WORLD))
        return envs[-1]

    cfg = EvalConfig(
        tasks=["lift"], episodes_per_task=2, batch_envs=1, replan_every=1, language_swap=False
    )
    out = closed_loop_eval(ExpertOracle(envs), make_env, cfg, progress=False)["lift"].to_dict()
    assert out["episodes"] == 2 and "swap_episodes" not in out
