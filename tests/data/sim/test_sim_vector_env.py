"""The batched world: equal to single envs stepped one by one, autoreset modes, errors."""

from __future__ import annotations

import numpy as np
import pytest
from teamvla_data.sim import make_env, make_expert, make_vector_env
from teamvla_data.sim.vector_env import stack_actions

TASKS3 = ["lift", "handoff", "drawer"]


def random_action(rng: np.random.Generator, n: int) -> dict:
    return {
        "action_a": rng.uniform(-3, 3, n).astype(np.float32),
        "action_b": rng.uniform(-3, 3, n).astype(np.float32),
        "grip_a": np.float32(rng.random()),
        "grip_b": np.float32(rng.random() < 0.5),
    }


def compare_with_single_envs(
    obs_mode: str, num_joints: int, steps: int, mode: str
) -> tuple[int, int]:
    """Step a vector env and the same single envs side by side; assert every output is identical."""
    n = 6
    kw = {"obs_mode": obs_mode, "num_joints": num_joints, "image_size": 24}
    vec = make_vector_env(TASKS3, n, autoreset_mode=mode, **kw)
    singles = [make_env(TASKS3[i % 3], **kw) for i in range(n)]
    vobs, _ = vec.reset(seed=100)
    for i, env in enumerate(singles):
        obs, _ = env.reset(seed=100 + i)  # sub-env i is seeded with 100 + i
        first = obs if obs_mode == "state" else obs["rgb_a"]
        assert np.array_equal(vobs[i] if obs_mode == "state" else vobs["rgb_a"][i], first)
    rng = np.random.default_rng(num_joints)
    experts = [make_expert(e.task, np.random.default_rng(i)) for i, e in enumerate(singles)]
    pending = [False] * n
    ended = [0, 0]
    for t in range(steps):
        actions = []
        for i, env in enumerate(singles):
            # even sub-envs follow the expert (successes), odd ones mix in wild random actions
            wild = i % 2 == 1 and rng.random() < 0.5
            actions.append(
                random_action(rng, num_joints) if wild else experts[i].act(env.unwrapped)
            )
        vobs, vrew, vterm, vtrunc, vinfo = vec.step(stack_actions(actions))
        for i, env in enumerate(singles):
            final = None
            if pending[i] and mode == "NextStep":
                obs, _ = env.reset()
                reward, term, trunc = 0.0, False, False
            else:
                obs, reward, term, trunc, _ = env.step(actions[i])
                if (term or trunc) and mode == "SameStep":
                    final, (obs, _) = obs, env.reset()
                ended[0] += term
                ended[1] += trunc
            if term or trunc or (pending[i] and mode == "NextStep"):
                experts[i] = make_expert(env.task, np.random.default_rng([i, t]))
            pending[i] = term or trunc
            assert (vrew[i], vterm[i], vtrunc[i]) == (reward, term, trunc), (t, i)
            if obs_mode == "state":
                assert np.array_equal(vobs[i], obs), (t, i)
            else:
                for key in ("rgb_a", "rgb_b", "q_a", "q_b"):
                    assert np.array_equal(vobs[key][i], obs[key]), (t, i, key)
                assert vobs["instruction"][i] == obs["instruction"]
            if final is not None:  # SameStep: the ended episode's last observation
                got = vinfo["final_obs"][i]
                if obs_mode == "state":
                    assert np.array_equal(got, final)
                else:
                    assert all(np.array_equal(got[k], final[k]) for k in final), (t, i)
                assert vinfo["_final_obs"][i] and vinfo["final_info"]["success"][i] == term
            a, b = vec.get_state(i), env.unwrapped.state
            assert (
                a.holders == b.holders
                and a.handle_holder == b.handle_holder
                and a.grasped == b.grasped
            )
            for field in ("q", "grip", "block_pos", "hold_offset", "handed_over"):
                assert np.array_equal(getattr(a, field), getattr(b, field)), (t, i, field)
            assert (a.drawer, a.t) == (b.drawer, b.t)
    return ended[0], ended[1]


@pytest.mark.parametrize("num_joints", [7, 3, 10])
def test_vector_env_equals_single_envs_stepped_one_by_one(num_joints):
    terminated, truncated = compare_with_single_envs("state", num_joints, 200, "NextStep")
    assert terminated >= 3 and truncated >= 1  # both kinds of episode end were compared


def test_vector_env_equals_single_envs_with_cameras_and_same_step_autoreset():
    terminated, truncated = compare_with_single_envs("pixels", 7, 130, "SameStep")
    assert terminated >= 2 and truncated >= 1


def test_next_step_autoreset_returns_the_new_episode_with_zero_reward():
    vec = make_vector_env("lift", 2, render=False)
    vec.reset(seed=[7, 8])
    hold = stack_actions([_hold(vec, 0), _hold(vec, 1)])
    limit = int(vec.max_steps[0])
    for _ in range(limit - 1):
        _, _, _, trunc, _ = vec.step(hold)
        assert not trunc.any()
    _, rew, term, trunc, _ = vec.step(hold)
    assert trunc.all() and not term.any()
    _, rew, term, trunc, info = vec.step(hold)
    assert not (term.any() or trunc.any()) and rew.tolist() == [0.0, 0.0]
    assert info["t"].tolist() == [0, 0] and info["_scene_seed"].all()
    assert [vec.get_state(i).t for i in range(2)] == [0, 0]


def _hold(vec, i):
    s = vec.get_state(i)
    return {"action_a": s.q[0], "action_b": s.q[1], "grip_a": 0.0, "grip_b": 0.0}


def test_disabled_autoreset_needs_an_explicit_masked_reset():
    vec = make_vector_env(["lift", "drawer"], 2, render=False, autoreset_mode="Disabled")
    vec.reset(seed=0)
    expert = make_expert("lift", np.random.default_rng(0))
    other = make_expert("drawer", np.random.default_rng(0))
    while True:
        a = stack_actions([expert.act(vec.get_state(0)), other.act(vec.get_state(1))])
        _, _, term, trunc, _ = vec.step(a)
        if term[0] or trunc[0]:
            break
    assert term[0]
    drawer_before = vec.get_state(1)
    with pytest.raises(ValueError, match=r"sub-env\(s\) \[0\] ended"):
        vec.step(a)
    _, info = vec.reset(seed=[5, None], options={"reset_mask": np.array([True, False])})
    assert info["scene_seed"][0] == 5 and info["_scene_seed"].tolist() == [True, False]
    after = vec.get_state(1)  # the unmasked sub-env was left alone
    assert after.t == drawer_before.t and np.array_equal(after.q, drawer_before.q)
    vec.step(stack_actions([_hold(vec, 0), _hold(vec, 1)]))


def test_reset_options_and_errors():
    vec = make_vector_env(["lift", "handoff"], 4, image_size=24)
    with pytest.raises(RuntimeError, match="reset"):
        vec.step(vec.action_space.sample())
    obs, info = vec.reset(
        seed=3, options={"instruction": [None, "hand over the red block", None, None]}
    )
    assert obs["instruction"][1] == "hand over the red block"
    assert vec.tasks == ["lift", "handoff", "lift", "handoff"]
    assert info["scene_seed"].tolist() == [3, 4, 5, 6]
    assert obs in vec.observation_space
    good = vec.action_space.sample()
    bad = {**good, "grip_b": np.full(4, np.nan, np.float32)}
    with pytest.raises(
        ValueError, match=r"grip_b: NaN or infinite value in sub-env\(s\) \[0, 1, 2, 3\]"
    ):
        vec.step(bad)
    with pytest.raises(ValueError, match=r"action_a: expected shape \(4, 7\)"):
        vec.step({**good, "action_a": np.zeros((4, 6), np.float32)})
    with pytest.raises(ValueError, match="missing 'grip_a'"):
        vec.step({k: v for k, v in good.items() if k != "grip_a"})
    with pytest.raises(ValueError, match="reset_mask"):
        vec.reset(options={"reset_mask": np.array([1, 0, 0, 0])})
    with pytest.raises(ValueError, match="seed: expected an int or 4 seeds"):
        vec.reset(seed=[1, 2])
    with pytest.raises(ValueError, match="unknown task"):
        make_vector_env(["lift", "stack"], 2)
    frames = make_vector_env("lift", 2, image_size=24, render_mode="rgb_array")
    frames.reset(seed=0)
    assert [f.shape for f in frames.render()] == [(24, 48, 3), (24, 48, 3)]


def test_experts_act_on_vector_env_states_and_set_state_round_trips():
    vec = make_vector_env(TASKS3, 3, render=False, obs_mode="state")
    vec.reset(seed=11)
    experts = [make_expert(t, np.random.default_rng(0)) for t in vec.tasks]
    done = np.zeros(3, bool)
    for _ in range(130):
        a = stack_actions([e.act(vec.get_state(i)) for i, e in enumerate(experts)])
        _, _, term, _, _ = vec.step(a)
        done |= term
        if done.all():
            break
    assert done.all()
    state = vec.get_state(2)
    vec.set_state(0, vec.get_state(0))
    with pytest.raises(ValueError, match="runs 'lift'"):
        vec.set_state(0, state)
