"""The task registry: tasks keyed by name, seeds derived from the name, adding a task changes nothing else."""

from __future__ import annotations

import dataclasses

import gymnasium
import numpy as np
import pytest
from teamvla_data.sim import (
    EVAL_SEED_START,
    TASKS,
    BimanualEnv,
    TaskConfig,
    TaskSpec,
    WorldConfig,
    episode_seed,
    eval_seeds,
    generate_dataset,
    get_task,
    make_env,
    make_expert,
    make_vector_env,
    register_envs,
    register_task,
    registry,
    run_expert,
    task_names,
)
from teamvla_data.sim.experts import LiftExpert
from teamvla_data.sim.registry import EVAL_BLOCK_SIZE, eval_block, scene_key
from teamvla_data.sim.state import block_bottom
from teamvla_data.sim.world import ARM_A
from teamvla_schema.config import ConfigError, from_dict

# Pinned on purpose: changing a task's evaluation seeds changes every published result.
FIRST_EVAL_SEED = {
    "lift": 87009827483648,
    "handoff": 2143889667483648,
    "drawer": 2043024317483648,
}


def test_builtin_tasks_are_registered_by_name():
    assert task_names()[:3] == TASKS == ("lift", "handoff", "drawer")
    assert get_task("drawer").has_drawer and not get_task("lift").has_drawer
    with pytest.raises(ValueError, match="unknown task 'stack'; tasks are lift, handoff, drawer"):
        get_task("stack")


def test_eval_seed_blocks_come_from_the_name_and_never_collide():
    blocks = {t: eval_block(t) for t in TASKS}
    assert len(set(blocks.values())) == len(TASKS)
    ranges = {t: set(eval_seeds(t, 1000)) for t in TASKS}
    for t in TASKS:
        assert eval_seeds(t, 1) == [FIRST_EVAL_SEED[t]]
        assert eval_seeds(t, 3, start=5) == [FIRST_EVAL_SEED[t] + 5 + i for i in range(3)]
        assert all(EVAL_SEED_START <= s < 2**53 for s in ranges[t])
        others = set().union(*(ranges[o] for o in TASKS if o != t))
        assert not ranges[t] & others
        # whole blocks are disjoint, not just the first 1000 seeds
        assert all(abs(blocks[t] - blocks[o]) >= 1 for o in TASKS if o != t)
    with pytest.raises(ValueError, match=f"start \\+ n <= {EVAL_BLOCK_SIZE}"):
        eval_seeds("lift", 2, start=EVAL_BLOCK_SIZE - 1)


def test_a_colliding_task_is_refused(monkeypatch):
    monkeypatch.setattr(registry, "eval_block", lambda name: 7)  # every name in one block
    spec = dataclasses.replace(get_task("lift"), name="lift_copy")
    with pytest.raises(ValueError, match="'lift_copy' would share seeds with 'lift'"):
        register_task(spec)
    assert "lift_copy" not in task_names()


def lift_high_success(state, cfg, layout) -> bool:
    """A toy task: lift the block twice as high."""
    b = state.target
    return bool(state.holders[b]) and block_bottom(state, b, layout) >= 2 * cfg.success.lift_height


class LiftHighExpert(LiftExpert):
    task = "lift_high"

    def plan(self, state, model):
        plans = super().plan(state, model)
        goal, angle, grip, phase = plans[ARM_A]
        if phase == "lift":
            goal = np.array([goal[0], 0.42])
        return [(goal, angle, grip, phase), plans[1]]


LIFT_HIGH = TaskSpec(
    name="lift_high",
    max_steps=90,
    instructions=("lift the {color} block high",),
    spawn_x=(-0.33, 0.0),
    has_drawer=False,
    success=lift_high_success,
    expert=LiftHighExpert,
)


def fingerprint() -> dict:
    """Seeds and first observations of the built-in tasks."""
    env = BimanualEnv(WorldConfig(image_size=24))
    out = {}
    for t in TASKS:
        out[t, "episode"] = [episode_seed(0, t, i) for i in range(5)]
        out[t, "eval"] = eval_seeds(t, 5)
        out[t, "scene"] = env.reset(t, 123)["rgb_a"].tobytes()
    return out


@pytest.fixture
def lift_high():
    before = fingerprint()
    register_task(LIFT_HIGH)
    register_task(LIFT_HIGH)  # idempotent
    try:
        yield before
    finally:
        registry.unregister_task("lift_high")
        gymnasium.registry.pop("teamvla/Lift_high-v0", None)


def test_registering_a_task_changes_no_other_task(lift_high, tmp_path):
    assert fingerprint() == lift_high  # same seeds, same scenes for lift, handoff, drawer
    assert scene_key("lift_high") >= 2**32 and [scene_key(t) for t in TASKS] == [0, 1, 2]
    seeds = eval_seeds("lift_high", 50)
    assert seeds[0] >= EVAL_SEED_START and not set(seeds) & set().union(
        *(eval_seeds(t, 50) for t in TASKS)
    )
    # the new task works everywhere a built-in one does
    env = BimanualEnv(WorldConfig(render=False))
    steps = list(run_expert(env, "lift_high", seeds[0]))
    assert steps[-1]["success"] and steps[-1]["instruction"].endswith("block high")
    cfg = from_dict(TaskConfig, {"name": "lift_high"}, key="task").resolved()
    assert cfg.max_steps == 90
    gym_env = make_env("lift_high", render=False)
    gym_env.reset(seed=seeds[0])
    expert = make_expert("lift_high", np.random.default_rng(0))
    terminated = False
    while not terminated:
        _, _, terminated, truncated, _ = gym_env.step(expert.act(gym_env.unwrapped))
        assert not truncated
    assert (
        register_envs()[-1] == "teamvla/Lift_high-v0"
        and "teamvla/Lift_high-v0" in gymnasium.registry
    )
    vec = make_vector_env(["lift", "lift_high"], 2, obs_mode="state")
    vec.reset(seed=0)
    vec.step(vec.action_space.sample())
    paths = generate_dataset(tmp_path, ["lift_high"], 1, seed=0, image_size=16, progress=False)
    assert paths[0].name == "lift_high-000000.npz"


def test_a_different_spec_under_a_registered_name_needs_replace():
    with pytest.raises(ValueError, match="already registered"):
        register_task(dataclasses.replace(get_task("lift"), max_steps=5))
    with pytest.raises(ConfigError, match="expected one of"):
        from_dict(TaskConfig, {"name": "lift_high"}, key="task")
    with pytest.raises(ValueError, match="instructions must be templates"):
        dataclasses.replace(LIFT_HIGH, instructions=("lift it",))
