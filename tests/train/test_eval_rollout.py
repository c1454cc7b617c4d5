"""Closed-loop rollout mechanics on a toy env: batching, windows, re-planning, step limits."""

from __future__ import annotations

import numpy as np
import pytest
from teamvla_train.rollout import EpisodeSpec, run_rollouts

try:  # tests/train as a package or as a plain directory on sys.path
    from .eval_fakes import LineEnv, ReachPolicy
except ImportError:
    from eval_fakes import LineEnv, ReachPolicy  # type: ignore[no-redef]


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
