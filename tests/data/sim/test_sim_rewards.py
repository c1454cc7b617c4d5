"""Rewards from the task's reward: weights, and the recorded reward/done step fields."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from teamvla_data import MultiTaskDataset
from teamvla_data.sim import (
    BimanualEnv,
    TaskConfig,
    WorldConfig,
    expert_rng,
    generate_dataset,
    make_env,
    make_expert,
)
from teamvla_data.sim.world import ARM_A, ARM_B, Physics
from teamvla_schema import EpisodeWriter, read_episode
from teamvla_schema.cli import main
from teamvla_schema.config import from_dict, load_config

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
FAST = WorldConfig(render=False)


def yaml_task(name: str, success: float, step: float, grasp: float) -> TaskConfig:
    """The shipped configs/<name>.yaml with the reward weights overridden on the command line."""
    loaded = load_config(
        CONFIGS / f"{name}.yaml",
        [
            f"task.reward.success={success}",
            f"task.reward.step={step}",
            f"task.reward.grasp={grasp}",
        ],
    )
    return from_dict(TaskConfig, loaded.data["task"], key="task", config=loaded)


@pytest.mark.parametrize("task", ["lift", "handoff", "drawer"])
def test_rewards_follow_the_yaml_weights_on_an_expert_episode(task):
    cfg = yaml_task(task, 2.5, -0.01, 0.5)
    env = BimanualEnv(FAST, {task: cfg})
    env.reset(task, 3)
    expert = make_expert(task, expert_rng(3), env.task_cfg)
    rewards, grasps, done = [], [], False
    while not done:
        _, success, done, info = env.step(expert.act(env))
        rewards.append(info["reward"])
        grasps.append(info["first_grasp"])
    assert success and sum(grasps) == 1
    k = grasps.index(True)
    expected = [-0.01] * len(rewards)
    expected[k] = -0.01 + 0.5  # the weights add
    expected[-1] = -0.01 + 2.5  # the success step: success weight plus the step weight
    assert rewards == expected


def test_the_grasp_reward_comes_once_even_after_a_drop_and_regrasp():
    cfg = yaml_task("lift", 1.0, 0.0, 0.25)
    env = make_env("lift", render=False, task_cfg=cfg)
    env.reset(seed=1)
    expert = make_expert("lift", expert_rng(1))
    rewards = []
    while not env.unwrapped.state.holders[env.unwrapped.state.target]:
        rewards.append(env.step(expert.act(env.unwrapped))[1])
    for _ in range(3):  # knocked out of the gripper: the block drops
        rewards.append(env.step({**expert.act(env.unwrapped), "grip_a": np.float32(0.0)})[1])
    assert not env.unwrapped.state.holders[env.unwrapped.state.target]
    terminated = truncated = False
    while not (terminated or truncated):
        _, reward, terminated, truncated, _ = env.step(expert.act(env.unwrapped))
        rewards.append(reward)
    assert terminated and rewards.count(0.25) == 1 and rewards[-1] == 1.0 and sum(rewards) == 1.25


def test_grasp_reward_for_either_arm_and_only_for_the_named_block():
    cfg = yaml_task("handoff", 1.0, 0.0, 0.5)
    for target, arm, expected in (("red", ARM_B, 0.5), ("blue", ARM_B, 0.0), ("red", ARM_A, 0.5)):
        env = BimanualEnv(FAST, {"handoff": cfg})
        env.reset("handoff", 0, instruction=f"hand over the {target} block")
        st = env.state
        st.block_pos[0] = Physics(env.model, env.world_cfg).grip_point(
            st, arm
        )  # red at the gripper
        st.block_pos[1] = (-0.3, 0.035)
        st.grip[arm] = 0.4
        key = "grip_a" if arm == ARM_A else "grip_b"
        _, _, _, info = env.step({**env.hold_action(), key: np.float32(1.0)})
        assert st.holders[0] == [arm]
        assert info["reward"] == expected and info["first_grasp"] == (expected > 0)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("rewards") / "ds"
    return generate_dataset(root, ["lift", "drawer"], 2, seed=3, image_size=16, progress=False)


def test_recorded_reward_and_done_follow_the_conventions(recorded):
    for path in recorded:
        ep = read_episode(path)
        a, task = ep.arrays, ep.meta.task
        assert a["reward"].dtype == np.float32 and a["done"].dtype == bool
        assert a["done"][-1] and not a["done"][:-1].any()
        assert a["reward"][-1] == 0.0  # the final observation: no action was executed
        # reward[t] is what step returned for the action recorded at step t
        env = BimanualEnv(WorldConfig(image_size=16))
        env.reset(task, ep.meta.user["seed"])
        for t in range(len(ep) - 1):
            action = {k: a[k][t] for k in ("action_a", "action_b", "grip_a", "grip_b")}
            _, _, _, info = env.step(action)
            assert a["reward"][t] == np.float32(info["reward"])
        assert ep.meta.success and a["reward"].sum() == 1.0  # default weights: success 1


def test_datasets_with_and_without_reward_fields_open(recorded, tmp_path):
    old_root = tmp_path / "old"
    with EpisodeWriter(old_root) as writer:  # the same episode as written before the fields existed
        ep = read_episode(recorded[0])
        writer.start_episode({"task": ep.meta.task, "episode_id": "old-000000"})
        for t in range(len(ep)):
            writer.add_step({k: v[t] for k, v in ep.arrays.items() if k not in ("reward", "done")})
        writer.end_episode(success=True)
    assert "reward" not in read_episode(old_root / "lift" / "old-000000.npz").arrays
    assert main(["validate", str(recorded[0].parent.parent)]) == 0
    assert main(["validate", str(old_root)]) == 0
    for use_cache in (True, False):
        ds = MultiTaskDataset(
            [recorded[0].parent.parent, old_root],
            use_cache=use_cache,
            cache_dir=tmp_path / "cache",
        )
        assert len(ds.episodes) == len(recorded) + 1
        batch = ds.__getitems__(list(range(min(4, len(ds)))))
        assert batch["action_a"].shape[0] == min(4, len(ds))


def test_reward_weights_can_be_changed_in_code_too():
    cfg = yaml_task("lift", 1.0, 0.0, 0.0)
    cfg = dataclasses.replace(cfg, reward=dataclasses.replace(cfg.reward, step=-1.0))
    env = make_env("lift", render=False, task_cfg=cfg)
    env.reset(seed=0)
    assert env.step(env.unwrapped.world.hold_action())[1] == -1.0
