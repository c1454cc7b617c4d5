"""DAgger: beta schedules, expert labels on the states the policy visits, and resume after SIGKILL."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

from teamvla_data.sim import BimanualEnv, WorldConfig, expert_rng, make_expert
from teamvla_schema import read_episode, read_episode_meta, validate_episode_file
from teamvla_schema.config import dump_yaml
from teamvla_schema.episode import find_episodes
from teamvla_train.algos.dagger_collect import (
    CollectStats,
    beta_at,
    collect_iteration,
    disagrees,
    is_complete,
    read_stats,
)
from teamvla_train.engine.metrics import read_events
from teamvla_train.policy import load_policy
from train_testlib import REPO


def test_beta_schedules() -> None:
    linear = [beta_at(i, schedule="linear", beta0=1.0, rampdown=4) for i in range(6)]
    assert linear == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    assert [beta_at(i, schedule="exponential", beta0=0.5, rampdown=1) for i in range(3)] == [
        0.5,
        0.25,
        0.125,
    ]
    assert beta_at(7, schedule="constant", beta0=0.3, rampdown=1) == 0.3
    assert beta_at(0, schedule="zero", beta0=1.0, rampdown=1) == 0.0
    with pytest.raises(ValueError, match="unknown beta schedule"):
        beta_at(0, schedule="cosine", beta0=1.0, rampdown=1)


class StillPolicy:
    """A chunk policy that always commands joint angles 0 with open grippers."""

    obs_history = 0
    action_horizon = 4

    def predict_chunk(self, obs):
        b = len(obs["instruction"])
        n = obs["q_a"].shape[-1]
        zeros = np.zeros((b, self.action_horizon, n), np.float32)
        grip = np.zeros((b, self.action_horizon), np.float32)
        return {"action_a": zeros, "action_b": zeros, "grip_a": grip, "grip_b": grip}


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_visited_states_are_labelled_with_the_expert_continuation(
    tmp_path: Path, beta: float
) -> None:
    world = WorldConfig(image_size=16)
    root = tmp_path / "iter"
    label_every, label_steps = 5, 6
    stats = collect_iteration(
        StillPolicy(),
        root=root,
        tasks=["lift", "drawer"],
        episodes_per_task=2,
        iteration=0,
        beta=beta,
        world=world,
        batch_envs=3,
        label_every=label_every,
        label_steps=label_steps,
    )
    assert is_complete(root) and read_stats(root)["episodes"] == stats.episodes
    assert stats.intervention_rate == beta
    files = find_episodes(root)
    assert len(files) == stats.episodes > 4
    # Every stored step holds an action the expert was asked for, the final observation's too.
    assert stats.steps == sum(read_episode_meta(p).meta.num_steps for p in files)
    branch_points: dict[tuple[str, int], list[int]] = {}
    for path in files:
        validate_episode_file(path)
        ep = read_episode(path)
        user, task = ep.meta.user, ep.meta.task
        seed, t0 = user["seed"], user["branch_step"]
        branch_points.setdefault((task, seed), []).append(t0)
        assert ep.meta.num_steps <= label_steps + 1
        # Replay the rollout up to the branch point: it executed the expert's actions (beta 1)
        # or the policy's zeros (beta 0).
        env = BimanualEnv(world)
        obs = env.reset(task, seed)
        driver = make_expert(task, expert_rng(seed), env.task_cfgs[task])
        for _ in range(t0):
            if beta == 1.0:
                action = driver.act(env)
            else:
                chunk = StillPolicy().predict_chunk({"instruction": [""], "q_a": obs["q_a"][None]})
                action = {k: v[0, 0] for k, v in chunk.items()}
            obs, _, _, _ = env.step(action)
        # From there the episode is the expert's own continuation, labelled with its actions.
        expert = make_expert(task, expert_rng(seed), env.task_cfgs[task])
        for t in range(ep.meta.num_steps):
            np.testing.assert_array_equal(ep.arrays["q_a"][t], obs["q_a"])
            np.testing.assert_array_equal(ep.arrays["rgb_b"][t], obs["rgb_b"])
            label = expert.act(env)
            for key in ("action_a", "action_b", "grip_a", "grip_b"):
                np.testing.assert_array_equal(ep.arrays[key][t], label[key])
            obs, _, _, _ = env.step(label)
    # Every label_every-th visited state of every rollout became a branch.
    for points in branch_points.values():
        assert sorted(points) == list(range(0, label_every * len(points), label_every))
    if beta == 1.0:
        assert all(stats.success[t] == 1.0 for t in ("lift", "drawer"))  # the expert alone succeeds
    else:
        assert all(stats.success[t] == 0.0 for t in ("lift", "drawer"))  # holding still never does


def _collect(root: Path, beta: float, **settings: Any) -> CollectStats:
    """One collection with StillPolicy in small worlds; ``settings`` override the task mix and labels."""
    kwargs: dict[str, Any] = {
        "tasks": ["lift", "handoff"],
        "episodes_per_task": 6,
        "label_every": 10,
    }
    return collect_iteration(
        StillPolicy(),
        root=root,
        iteration=0,
        beta=beta,
        world=WorldConfig(image_size=16),
        batch_envs=4,
        label_steps=3,
        **{**kwargs, **settings},
    )


def test_label_rollouts_failed_labels_exactly_the_rollouts_that_fail(tmp_path: Path) -> None:
    # beta 0.9: the expert's steps mixed with holding still; some rollouts succeed, some fail.
    every = _collect(tmp_path / "all", 0.9, label_rollouts="all").to_dict()
    failed = _collect(tmp_path / "failed", 0.9, label_rollouts="failed").to_dict()
    # Labelling draws nothing from the generator: both modes played the same rollouts.
    assert failed["success"] == every["success"] and failed["expert_steps"] == every["expert_steps"]
    wins = sum(round(v * 6) for v in every["success"].values())
    assert 0 < wins < 12, every["success"]  # the test needs both outcomes
    assert every["labelled_rollouts"] == 12 and failed["labelled_rollouts"] == 12 - wins
    all_files = {p.name: p for p in find_episodes(tmp_path / "all")}
    failed_files = find_episodes(tmp_path / "failed")
    assert 0 < len(failed_files) < len(all_files) and failed["steps"] < every["steps"]
    labelled = set()
    for path in failed_files:  # the same branches, labelled from the saved copy of the world
        ep, twin = read_episode(path), read_episode(all_files[path.name])
        labelled.add((ep.meta.task, ep.meta.user["episode_index"]))
        for key in ("rgb_a", "q_b", "action_a", "grip_b"):
            np.testing.assert_array_equal(ep.arrays[key], twin.arrays[key])
    # Every branch point of a labelled rollout is there, and no branch of another rollout.
    for name in all_files:
        task, rest = name.split("-dagger000-")
        assert (name in {p.name for p in failed_files}) == ((task, int(rest[:6])) in labelled)
    assert len(labelled) == 12 - wins
    # The expert alone always succeeds: nothing to label.
    assert _collect(tmp_path / "expert", 1.0, label_rollouts="failed").steps == 0
    with pytest.raises(ValueError, match="label_rollouts"):
        _collect(tmp_path / "bad", 0.0, label_rollouts="some")


def test_disagrees_compares_joint_targets_within_tolerance_and_gripper_commands() -> None:
    a = {"action_a": np.zeros(3, np.float32), "action_b": np.zeros(3, np.float32),
         "grip_a": np.float32(0), "grip_b": np.float32(1)}  # fmt: skip
    near = {**a, "action_b": np.array([0.0, 0.05, 0.0], np.float32)}
    assert not disagrees(a, a, 0.01)
    assert disagrees(a, near, 0.01) and not disagrees(a, near, 0.06)
    assert disagrees(a, {**a, "grip_a": np.float32(1)}, 10.0)  # a gripper command always counts


def _gated(root: Path, beta: float, gate: float) -> CollectStats:
    return _collect(root, beta, tasks=["lift", "drawer"], episodes_per_task=2, label_every=5, label_gate=gate)  # fmt: skip


def test_label_gate_labels_only_where_the_policy_parts_from_the_expert(tmp_path: Path) -> None:
    # A tiny tolerance: holding still always differs from the expert, so every point is labelled,
    # exactly as without the gate, and every gate query is the first action of a written label.
    plain = _gated(tmp_path / "plain", 0.5, 0.0)
    tight = _gated(tmp_path / "tight", 0.5, 1e-6)
    assert plain.gate_queries == 0 and tight.gate_queries == tight.episodes == plain.episodes
    assert tight.expert_actions == plain.expert_actions == plain.steps + plain.expert_steps
    for path in find_episodes(tmp_path / "tight"):
        twin = read_episode(tmp_path / "plain" / path.relative_to(tmp_path / "tight"))
        np.testing.assert_array_equal(
            read_episode(path).arrays["action_a"], twin.arrays["action_a"]
        )
    # A huge joint tolerance with the expert driving (beta 1): the policy's open grippers part
    # from the expert exactly where the expert closes one, so only those points are labelled.
    loose = _gated(tmp_path / "loose", 1.0, 1e3)
    labelled: dict[tuple[str, int], set[int]] = {}
    for path in find_episodes(tmp_path / "loose"):
        ep = read_episode(path)
        labelled.setdefault((ep.meta.task, ep.meta.user["seed"]), set()).add(
            ep.meta.user["branch_step"]
        )
    world = WorldConfig(image_size=16)
    closed_points = 0
    for path in find_episodes(tmp_path / "plain"):  # the same scenes, replayed with the expert
        ep = read_episode(path)
        if ep.meta.user["branch_step"] != 0:  # one branch per scene names its task and seed
            continue
        task, seed = ep.meta.task, ep.meta.user["seed"]
        env = BimanualEnv(world)
        env.reset(task, seed)
        expert = make_expert(task, expert_rng(seed), env.task_cfgs[task])
        for t in range(10_000):
            action = expert.act(env)
            if t % 5 == 0:
                closes = bool(action["grip_a"] > 0.5 or action["grip_b"] > 0.5)
                closed_points += closes
                assert (t in labelled.get((task, seed), set())) == closes, (task, seed, t)
            _, ok, done, _ = env.step(action)
            if ok or done:
                break
    assert 0 < loose.episodes == closed_points < loose.gate_queries
    assert (
        loose.expert_actions
        == loose.steps + loose.expert_steps + loose.gate_queries - loose.episodes
    )
    with pytest.raises(ValueError, match="label_gate"):
        _gated(tmp_path / "bad", 0.0, -1.0)


def _tiny_dagger_config(tmp_path: Path) -> Path:
    cfg = {
        "extends": ["configs/train_dagger.yaml"],
        "dataset": {"batch_size": 16, "val_fraction": 0.2},
        "model": {
            "image_size": 16,
            "conv_channels": [8, 16],
            "conv_strides": [2, 2],
            "hidden_dim": 32,
        },
        "trainer": {"log_every": 5, "val_every": 0, "ckpt_every": 0, "keep_last": 5},
        "dagger": {
            "tasks": ["lift", "handoff"],
            "demos_per_task": 2,
            "image_size": 16,
            "initial_steps": 8,
            "iterations": 2,
            "episodes_per_iteration": 2,
            "steps_per_iteration": 8,
            "batch_envs": 4,
            "eval_episodes_per_task": 2,
            # Mixed rollouts (whatever the shipped default): resume must replay the expert's draws.
            "beta": "linear",
            "beta0": 0.5,
            "beta_rampdown": 2,
        },
    }
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    path = tmp_path / "dagger.yaml"
    path.write_text(dump_yaml(cfg))
    return path


def _teamvla(*args: str) -> list[str]:
    return [sys.executable, "-m", "teamvla_schema.cli", *args]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_dagger_killed_after_an_iteration_resumes_to_the_same_policy(tmp_path: Path) -> None:
    cfg = _tiny_dagger_config(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ref = subprocess.run(
        _teamvla("train", "--config", str(cfg), "--out", str(tmp_path / "ref"), "--no-progress"),
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=240,
    )  # fmt: skip
    assert ref.returncode == 0, ref.stderr[-3000:]
    events = read_events(tmp_path / "ref" / "metrics.jsonl", "dagger_iteration")
    assert [e["iteration"] for e in events] == [0, 1]
    assert (tmp_path / "ref" / "dagger" / "iterations.png").is_file()

    # Kill the second run as soon as iteration 0's data and its checkpoint exist.
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        _teamvla("train", "--config", str(cfg), "--out", str(run), "--no-progress"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 200
    ckpt_dir = run / "checkpoints" / "multi"
    while time.monotonic() < deadline and proc.poll() is None:
        if is_complete(run / "dagger" / "iter_000") and list(ckpt_dir.glob("epoch_0001*.ckpt")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    resumed = subprocess.run(
        _teamvla("train", "--config", str(cfg), "--out", str(run), "--resume", "auto", "--no-progress"),
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=240,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_policy(tmp_path / "ref").model.state_dict()
    b = load_policy(run).model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    # Same expert-labelled data in both runs.
    for i in (0, 1):
        ref_files = sorted(
            p.name for p in find_episodes(tmp_path / "ref" / "dagger" / f"iter_{i:03d}")
        )
        run_files = sorted(p.name for p in find_episodes(run / "dagger" / f"iter_{i:03d}"))
        assert ref_files == run_files and ref_files


def test_sections_of_other_algorithms_do_not_block_a_resume() -> None:
    from teamvla_train.engine.resume import resume_config_changes

    saved = {"trainer": {"algo": "bc", "max_steps": 5}, "dagger": {"iterations": 4}, "optim": {"lr": 1.0}}  # fmt: skip
    now = {"trainer": {"algo": "bc", "max_steps": 9}, "dagger": {"iterations": 1}, "optim": {"lr": 1.0}}  # fmt: skip
    assert resume_config_changes(saved, now) == []  # dagger.* is not read by a bc run
    now_dagger = {**now, "trainer": {"algo": "dagger", "max_steps": 9}}
    saved_dagger = {**saved, "trainer": {"algo": "dagger", "max_steps": 5}}
    assert resume_config_changes(saved_dagger, now_dagger) == [("dagger.iterations", 4, 1)]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("stats", ["demos", "aggregate"])
def test_normalisation_keeps_the_demos_statistics_unless_told_to_recompute_and_old_caches_go(
    tmp_path: Path, stats: str
) -> None:
    from teamvla_data import make_dataloader
    from teamvla_schema.checkpoint import load_checkpoint
    from teamvla_schema.config import load_config
    from teamvla_train.config import resolve_train_config
    from teamvla_train.engine import train

    cfg = resolve_train_config(
        load_config(
            _tiny_dagger_config(tmp_path),
            [f"dagger.stats={stats}", "dagger.iterations=1", "dagger.eval_episodes_per_task=0"],
        )
    )
    run = tmp_path / "run"
    train(cfg, run_dir=run, progress=False)
    final = sorted((run / "checkpoints" / "multi").glob("*.ckpt"))[-1]
    saved = load_checkpoint(final)["stats"]
    # The statistics of the demonstrations alone, as the loader computes them.
    demos_cfg = dataclasses.replace(
        cfg.dataset, roots=[str(run / "dagger" / "demos")], tasks=["lift", "handoff"]
    )
    demos = make_dataloader(demos_cfg, "train").stats
    assert demos is not None
    # Compared field by field: kept statistics take the key of the selection they normalise.
    same = saved["fields"] == demos.to_dict()["fields"]
    assert same == (stats == "demos")
    assert saved["key"] != demos.key  # the aggregate is another selection than the demos
    # Only the last aggregate's loader cache is kept (each holds a copy of every image).
    assert [p.name for p in (run / "dagger" / "cache").iterdir()] == ["aggregate_001"]
