"""The bimanual world: reset, actions and clipping, determinism, language, success predicates."""

from __future__ import annotations

import numpy as np
import pytest
from teamvla_data.sim import (
    TASKS,
    BimanualEnv,
    WorldConfig,
    default_task_config,
    is_success,
    swap_instruction,
)
from teamvla_data.sim.layout import LAYOUT
from teamvla_data.sim.world import ARM_A, ARM_B, Physics
from teamvla_schema import validate_step

SMALL = WorldConfig(image_size=32)


def random_actions(env: BimanualEnv, n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        out.append(
            {
                "action_a": rng.uniform(-3, 3, env.num_joints).astype(np.float32),
                "action_b": rng.uniform(-3, 3, env.num_joints).astype(np.float32),
                "grip_a": np.float32(rng.uniform()),
                "grip_b": np.float32(rng.uniform()),
            }
        )
    return out


@pytest.mark.parametrize("task", TASKS)
def test_reset_returns_a_schema_step_without_the_action(task):
    env = BimanualEnv(SMALL)
    obs = env.reset(task, 0)
    assert obs["rgb_a"].shape == obs["rgb_b"].shape == (32, 32, 3)
    assert obs["rgb_a"].dtype == np.uint8
    assert obs["q_a"].dtype == np.float32 and obs["q_a"].shape == (7,)
    assert obs["task"] == task and obs["success"] is False
    step = {**obs, **env.hold_action(), "phase": "start"}
    assert validate_step(step)["instruction"] == obs["instruction"]


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_and_actions_give_bit_identical_observations(task):
    env1, env2 = BimanualEnv(SMALL), BimanualEnv(SMALL)
    obs1, obs2 = env1.reset(task, 11), env2.reset(task, 11)
    actions = random_actions(env1, 25, seed=1)
    for action in actions:
        for k in obs1:
            assert np.array_equal(obs1[k], obs2[k]), k
        obs1, s1, d1, _ = env1.step(action)
        obs2, s2, d2, _ = env2.step(action)
        assert (s1, d1) == (s2, d2)
    # A reset of a used environment replays the same scene too.
    again = env1.reset(task, 11)
    assert np.array_equal(again["rgb_a"], env2.reset(task, 11)["rgb_a"])


def test_seeds_randomise_the_scene_and_the_instruction():
    env = BimanualEnv(SMALL)
    positions, targets, texts = set(), set(), set()
    for seed in range(20):
        obs = env.reset("lift", seed)
        positions.add(tuple(np.round(env.state.block_pos[:, 0], 6)))
        targets.add(env.state.target_color)
        texts.add(obs["instruction"])
        sep = abs(env.state.block_pos[0, 0] - env.state.block_pos[1, 0])
        assert sep >= 0.1  # both blocks are always separately graspable
    assert len(positions) == 20
    assert targets == {"red", "blue"}
    assert len(texts) >= 4


@pytest.mark.parametrize("task", TASKS)
def test_explicit_instruction_switches_the_target_on_the_same_scene(task):
    env = BimanualEnv(SMALL)
    obs = env.reset(task, 5)
    blocks, q = env.state.block_pos.copy(), env.state.q.copy()
    swapped = swap_instruction(obs["instruction"])
    obs2 = env.reset(task, 5, instruction=swapped)
    assert obs2["instruction"] == swapped
    assert env.state.target_color != ("red" if "red" in obs["instruction"] else "blue")
    assert np.array_equal(env.state.block_pos, blocks) and np.array_equal(env.state.q, q)
    assert np.array_equal(obs2["rgb_a"], obs["rgb_a"])  # only the language differs
    with pytest.raises(ValueError, match="exactly one block colour"):
        env.reset(task, 5, instruction="lift the block")


def test_actions_outside_the_limits_are_clipped_and_approached_at_bounded_speed():
    env = BimanualEnv(SMALL)
    env.reset("lift", 0)
    n, cfg, model = env.num_joints, env.world_cfg, env.model
    wild = {
        "action_a": np.full(n, 100.0, np.float32),
        "action_b": np.full(n, -1e6, np.float32),
        "grip_a": np.float32(7.0),
        "grip_b": np.float32(-3.0),
    }
    prev = env.state.q.copy()
    for _ in range(60):
        env.step(wild)
        q = env.state.q
        assert np.all(np.abs(q - prev) <= cfg.max_joint_step + 1e-12)
        assert np.all(q >= model.lower) and np.all(q <= model.upper)
        assert env.state.grip.min() >= 0.0 and env.state.grip.max() <= 1.0
        prev = q.copy()
    assert np.allclose(env.state.q[ARM_A], model.upper) and np.allclose(
        env.state.q[ARM_B], model.lower
    )
    assert env.state.grip.tolist() == [1.0, 0.0]


def test_reachable_targets_are_reached_exactly():
    env = BimanualEnv(SMALL)
    env.reset("lift", 0)
    action = env.hold_action()
    action["action_a"] = (env.state.q[ARM_A] + 0.05).astype(np.float32)
    obs, *_ = env.step(action)
    assert np.array_equal(obs["q_a"], action["action_a"])
    assert np.array_equal(obs["q_b"], action["action_b"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"action_a": np.zeros(6, np.float32)}, "shape"),
        ({"action_b": np.full(7, np.nan, np.float32)}, "NaN"),
        ({"grip_a": np.float32(np.inf)}, "NaN or infinite"),
        ({"grip_b": None}, ""),
    ],
)
def test_malformed_actions_are_refused_and_leave_the_state_alone(change, message):
    env = BimanualEnv(SMALL)
    env.reset("lift", 0)
    before = env.state.copy()
    action = {**env.hold_action(), **change}
    if change.get("grip_b", 0) is None:
        del action["grip_b"]
        message = "missing 'grip_b'"
    with pytest.raises(ValueError, match=message):
        env.step(action)
    assert np.array_equal(env.state.q, before.q) and env.state.t == before.t


def test_unknown_task_and_bad_seed():
    env = BimanualEnv(SMALL)
    with pytest.raises(ValueError, match="unknown task"):
        env.reset("stack", 0)
    with pytest.raises(ValueError, match="seed"):
        env.reset("lift", -1)


# --------------------------------------------------------------------------- grasping physics


def grip_world(env: BimanualEnv, arm: int) -> np.ndarray:
    return Physics(env.model, env.world_cfg).grip_point(env.state, arm)


def test_closing_gripper_grasps_only_within_tolerance():
    env = BimanualEnv(SMALL)
    env.reset("lift", 0)
    st = env.state
    hold = env.hold_action()
    # Put the red block (in mid-air) right at A's half-closed gripper, the blue one far away.
    st.block_pos[0] = grip_world(env, ARM_A)
    st.block_pos[1] = (0.3, LAYOUT.block_half)
    st.grip[ARM_A] = 0.4
    for _ in range(3):
        env.step({**hold, "grip_a": np.float32(1.0)})
    assert st.holders == [[ARM_A], []]
    # Opening releases it; it falls back to the table.
    for _ in range(15):
        env.step({**hold, "grip_a": np.float32(0.0)})
    assert st.holders == [[], []]
    assert st.block_pos[0, 1] == pytest.approx(LAYOUT.block_half)
    # Closing 5 cm away grasps nothing.
    env.reset("lift", 0)
    st = env.state
    st.block_pos[0] = grip_world(env, ARM_A) + np.array([0.05, 0.0])
    st.grip[ARM_A] = 0.4
    for _ in range(3):
        env.step({**env.hold_action(), "grip_a": np.float32(1.0)})
    assert st.holders == [[], []]


# --------------------------------------------------------------------------- success predicates on hand-made states


def made_state(task: str, target: str = "red"):
    env = BimanualEnv(WorldConfig(render=False))
    env.reset(task, 0, instruction=f"do it with the {target} block")
    return env.state, default_task_config(task)


def test_lift_predicate():
    st, cfg = made_state("lift")
    h = LAYOUT.block_half
    assert not is_success(st, cfg)  # resting on the table
    st.block_pos[0, 1] = h + 0.2
    assert not is_success(st, cfg)  # high but not held (falling)
    st.holders[0] = [ARM_A]
    assert is_success(st, cfg)
    st.block_pos[0, 1] = h + cfg.success.lift_height - 0.01
    assert not is_success(st, cfg)  # held but too low
    st.holders = [[], [ARM_A]]
    st.block_pos[:, 1] = h + 0.3
    assert not is_success(st, cfg)  # the other block is lifted


def test_handoff_predicate():
    st, cfg = made_state("handoff", "blue")
    st.block_pos[1, 1] = 0.3
    st.holders[1] = [ARM_A, ARM_B]
    st.handed_over[1] = True
    assert not is_success(st, cfg)  # A still holds it
    st.holders[1] = [ARM_B]
    assert is_success(st, cfg)
    st.handed_over[1] = False
    assert not is_success(st, cfg)  # B picked it up without a hand-over
    st.handed_over[1] = True
    st.block_pos[1, 1] = LAYOUT.block_half
    assert not is_success(st, cfg)  # dropped to the table height
    st.block_pos[1, 1] = 0.3
    st.holders[1] = [ARM_A]
    assert not is_success(st, cfg)


def test_drawer_predicate():
    st, cfg = made_state("drawer", "red")
    lay = LAYOUT
    lo, hi = lay.tray_interior(0.18)
    in_tray = (0.5 * (lo + hi), lay.tray_floor + lay.block_half)
    assert not is_success(st, cfg)  # closed drawer, block on the cabinet
    st.drawer = 0.18
    st.block_pos[0] = in_tray
    assert is_success(st, cfg)
    st.drawer = cfg.success.drawer_open - 0.01
    assert not is_success(st, cfg)  # not open enough
    st.drawer = 0.18
    st.holders[0] = [ARM_A]
    assert not is_success(st, cfg)  # still held
    st.holders[0] = []
    st.block_pos[0, 1] += 0.05
    assert not is_success(st, cfg)  # still falling
    st.block_pos[0] = (lay.cabinet_x0 + 0.05, lay.cabinet_height + lay.block_half)
    st.block_pos[1] = in_tray
    assert not is_success(st, cfg)  # the other block is in the drawer


def test_a_block_dropped_over_the_open_tray_lands_inside_and_rides_with_it():
    env = BimanualEnv(WorldConfig(render=False))
    env.reset("drawer", 0, instruction="put the red block in the drawer")
    st = env.state
    st.drawer = 0.16
    lo, hi = LAYOUT.tray_interior(st.drawer)
    st.block_pos[0] = (0.5 * (lo + hi), 0.3)
    for _ in range(10):
        env.step(env.hold_action())
    assert st.block_pos[0, 1] == pytest.approx(LAYOUT.tray_floor + LAYOUT.block_half)
    assert is_success(st, env.task_cfg)
    # Put arm B on the handle (IK), grasp it and pull: the drawer opens and the block moves along.
    from teamvla_data.sim.kinematics import POINT_FORWARD
    from teamvla_data.sim.world import to_local

    handle = np.array(LAYOUT.handle_point(st.drawer))
    st.q[ARM_B] = env.model.solve(to_local(ARM_B, handle), POINT_FORWARD)
    st.grip[ARM_B] = 0.4
    env.step({**env.hold_action(), "grip_b": np.float32(1.0)})
    assert st.handle_holder == ARM_B
    x0, d0 = st.block_pos[0, 0], st.drawer
    for _ in range(5):
        goal = to_local(ARM_B, np.array(LAYOUT.handle_point(d0 + 0.04)))
        action = env.hold_action()
        action["action_b"] = env.model.ik_step(
            st.q[ARM_B], goal, POINT_FORWARD, max_cartesian=0.01
        ).astype(np.float32)
        env.step(action)
    assert st.handle_holder == ARM_B
    assert st.drawer > d0 + 0.03
    assert st.block_pos[0, 0] - x0 == pytest.approx(st.drawer - d0)
    assert is_success(st, env.task_cfg)
