"""`teamvla eval` on a tiny trained checkpoint: the JSON, its keys and episode counts, pictures, comparison."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from PIL import Image
from teamvla_data.sim.record import generate_dataset
from teamvla_data.sim.seeds import eval_seeds
from teamvla_schema.cli import main
from teamvla_train.engine import train

TASKS = ["lift", "handoff"]


def _tiny_config(root: Path, model: str) -> dict:
    return {
        "run": {"seed": 0, "device": "cpu"},
        "dataset": {
            "roots": [str(root)],
            "obs_history": 1,
            "action_horizon": 4,
            "batch_size": 8,
            "num_workers": 0,
            "val_fraction": 0.34,
        },
        "model": {
            "name": model,
            "image_size": 16,
            "conv_channels": [8, 16],
            "vision_dim": 16,
            "text_buckets": 256,
            "text_dim": 16,
            "proprio_dim": 16,
            "hidden_dim": 32,
            "msg_dim": 16,
        },
        "scheduler": {"warmup_steps": 1},
        "trainer": {
            "max_steps": 3,
            "log_every": 1,
            "val_every": 0,
            "val_batches": 1,
            "num_threads": 1,
        },
        "eval": {
            "tasks": TASKS,
            "episodes_per_task": 3,
            "max_steps": 6,
            "batch_envs": 2,
            "offline_batches": 1,
        },
    }


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("eval_ckpt")
    generate_dataset(
        base / "data", TASKS, episodes_per_task=3, seed=0, workers=1, image_size=16, progress=False
    )
    out = {}
    for model in ("single_brain", "msg_passing"):
        result = train(_tiny_config(base / "data", model), run_dir=base / model, progress=False)
        assert result.last_checkpoint is not None
        out[model] = result.last_checkpoint
    return out


def test_eval_writes_json_with_counts_and_pictures(checkpoints, tmp_path, capsys):
    ckpt = checkpoints["single_brain"]
    rc = main(
        [
            "eval",
            "--checkpoint",
            str(ckpt),
            "--episodes-per-task",
            "2",
            "--out",
            str(tmp_path),
            "--pictures",
            "--no-progress",
            "eval.replan_every=2",
        ]
    )
    assert rc == 0
    payload = json.loads((tmp_path / "eval.json").read_text())
    (res,) = payload["results"]
    assert res["model"] == "single_brain" and res["checkpoint"] == str(ckpt)
    assert res["eval_config"]["replan_every"] == 2 and res["eval_config"]["max_steps"] == 6
    assert set(res["closed_loop"]) == set(TASKS)
    for task, r in res["closed_loop"].items():
        assert r["episodes"] == 2 and r["swap_episodes"] == 2
        assert r["seeds"] == eval_seeds(task, 2)
        assert 0.0 <= r["success_rate"] <= 1.0 and 0.0 <= r["swap_success_rate"] <= 1.0
        assert len(r["episodes_detail"]) == 4 and all(e["steps"] <= 6 for e in r["episodes_detail"])
    offline = res["offline"]
    assert offline["split"] == "val" and offline["samples"] > 0
    assert (
        offline["joint_mse"] >= 0
        and offline["joint_l1"] >= 0
        and 0 <= offline["grip_accuracy"] <= 1
    )
    assert set(offline["per_task"]) <= set(TASKS)
    assert res["world"]["image_size"] == 16  # rendered at the training images' size
    pics = {Path(p).name for p in res["pictures"]}
    assert {
        "rollout_lift.png",
        "rollout_lift.gif",
        "rollout_handoff.png",
        "training_curves.png",
    } <= pics
    for p in res["pictures"]:
        with Image.open(p) as img:
            assert img.width > 0
    table = capsys.readouterr().out
    assert "lift" in table and "handoff" in table and "swapped" in table


def test_eval_compares_two_checkpoints(checkpoints, tmp_path, capsys):
    rc = main(
        [
            "eval",
            "--checkpoint",
            str(checkpoints["single_brain"]),
            "--checkpoint",
            str(checkpoints["msg_passing"]),
            "--tasks",
            "lift",
            "--episodes-per-task",
            "1",
            "--out",
            str(tmp_path),
            "--no-offline",
            "--no-progress",
        ]
    )
    assert rc == 0
    results = json.loads((tmp_path / "eval.json").read_text())["results"]
    assert [r["model"] for r in results] == ["single_brain", "msg_passing"]
    assert all(r["closed_loop"]["lift"]["episodes"] == 1 and "offline" not in r for r in results)
    header = capsys.readouterr().out.splitlines()[0]
    assert "single_brain #1" in header and "msg_passing #2" in header


def test_eval_refuses_bad_overrides(checkpoints, tmp_path, capsys):
    rc = main(
        [
            "eval",
            "--checkpoint",
            str(checkpoints["single_brain"]),
            "--out",
            str(tmp_path),
            "--no-progress",
            "eval.replan_evry=2",
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "eval.replan_evry" in err and "replan_every" in err
    assert not (tmp_path / "eval.json").exists()


def test_offline_error_is_zero_for_a_replay_policy(checkpoints):
    """The offline metric itself: a policy that returns the recorded targets scores 0 error, 100% grip."""
    from teamvla_data import MultiTaskDataset
    from teamvla_train.evaluation import offline_action_error
    from teamvla_train.policy import load_policy

    policy = load_policy(checkpoints["single_brain"])
    cfg = policy.config["dataset"]
    ds = MultiTaskDataset(
        cfg["roots"],
        split="val",
        val_fraction=cfg["val_fraction"],
        obs_history=policy.obs_history,
        action_horizon=policy.action_horizon,
    )
    table = {}
    for i in range(len(ds)):
        s = ds[i]
        table[s["q_a"].tobytes() + s["q_b"].tobytes() + s["rgb_a"].tobytes()] = s

    class Replay:
        obs_history, action_horizon = policy.obs_history, policy.action_horizon

        def predict_chunk(self, obs):
            rows = [
                table[obs["q_a"][i].tobytes() + obs["q_b"][i].tobytes() + obs["rgb_a"][i].tobytes()]
                for i in range(len(obs["instruction"]))
            ]
            return {
                k: np.stack([r[k] for r in rows])
                for k in ("action_a", "action_b", "grip_a", "grip_b")
            }

    out = offline_action_error(Replay(), cfg)
    assert out["samples"] == len(ds)
    assert out["joint_mse"] == 0.0 and out["joint_l1"] == 0.0 and out["grip_accuracy"] == 1.0
    real = offline_action_error(policy, cfg)
    assert real["joint_mse"] > 0


def test_predict_chunk_takes_a_plain_environment_observation(checkpoints):
    from teamvla_data.sim import BimanualEnv, WorldConfig
    from teamvla_train.policy import load_policy

    policy = load_policy(checkpoints["msg_passing"])
    env = BimanualEnv(WorldConfig(image_size=16))
    obs = env.reset("lift", 5)
    out = policy.predict_chunk(obs)  # one env, one step, no obs_is_pad
    ha, n = policy.action_horizon, policy.num_joints
    assert out["action_a"].shape == (1, ha, n) and out["grip_b"].shape == (1, ha)

    # Equal to the explicit window: the current frame repeated, earlier frames marked as padding.
    to = policy.obs_history + 1
    window = {k: np.repeat(np.asarray(obs[k])[None, None], to, axis=1) for k in ("rgb_a", "rgb_b", "q_a", "q_b")}  # fmt: skip
    window["instruction"] = [obs["instruction"]]
    window["obs_is_pad"] = np.array([[True] * (to - 1) + [False]])
    explicit = policy.predict_chunk(window)
    for key in out:
        np.testing.assert_array_equal(out[key], explicit[key])

    # A batch of B env observations without a time axis.
    batched = {k: np.stack([np.asarray(obs[k])] * 2) for k in ("rgb_a", "rgb_b", "q_a", "q_b")}
    batched["instruction"] = [obs["instruction"]] * 2
    assert policy.predict_chunk(batched)["action_b"].shape == (2, ha, n)

    # A window without its pad mask, or a missing field, says what is missing.
    window.pop("obs_is_pad")
    with pytest.raises(KeyError, match="obs_is_pad"):
        policy.predict_chunk(window)
    with pytest.raises(KeyError, match="rgb_b"):
        policy.predict_chunk({k: v for k, v in obs.items() if k != "rgb_b"})


@pytest.mark.parametrize("control", [{"replan_every": 2}, {"temporal_ensemble": 0.2}])
def test_select_action_matches_the_batched_rollout_on_the_same_seeds(checkpoints, control):
    from teamvla_data.sim import BimanualEnv, WorldConfig
    from teamvla_train import Policy
    from teamvla_train.rollout import EpisodeSpec, run_rollouts

    policy = Policy.from_checkpoint(checkpoints["single_brain"])
    for key, value in control.items():
        setattr(policy, key, value)
    specs = [EpisodeSpec(t, s) for t in TASKS for s in eval_seeds(t, 2)]
    batched = run_rollouts(
        policy,
        lambda: BimanualEnv(WorldConfig(image_size=16)),
        specs,
        batch_envs=4,
        max_steps=9,
        record=True,
        **control,
    )
    env = BimanualEnv(WorldConfig(image_size=16))
    for spec, expected in zip(specs, batched, strict=True):
        policy.reset()
        obs = env.reset(spec.task, spec.seed)
        frames = [np.concatenate([obs["rgb_a"], obs["rgb_b"]], axis=1)]
        for _ in range(expected.steps):
            action = policy.select_action(obs)
            assert set(action) == {"action_a", "action_b", "grip_a", "grip_b"}
            assert action["action_a"].dtype == np.float32 and action["grip_a"] in (0.0, 1.0)
            obs, success, _, _ = env.step(action)
            frames.append(np.concatenate([obs["rgb_a"], obs["rgb_b"]], axis=1))
        assert success == expected.success
        # Same states visited (a one-env batch may round differently from a four-env one,
        # so compare the pictures with a small tolerance rather than bit for bit).
        diff = np.abs(np.stack(frames).astype(int) - np.stack(expected.frames).astype(int))
        assert (diff > 0).mean() < 0.02, (spec, (diff > 0).mean())


def test_select_actions_serves_a_batch_and_resets_single_envs(checkpoints):
    from teamvla_data.sim import BimanualEnv, WorldConfig
    from teamvla_train import Policy

    policy = Policy.from_checkpoint(checkpoints["msg_passing"])
    policy.replan_every = 3
    envs = [BimanualEnv(WorldConfig(image_size=16)) for _ in range(3)]
    obs = [e.reset("lift", s) for e, s in zip(envs, eval_seeds("lift", 3), strict=True)]

    def batch(observations):
        out = {k: np.stack([o[k] for o in observations]) for k in ("rgb_a", "rgb_b", "q_a", "q_b")}
        out["instruction"] = [o["instruction"] for o in observations]
        return out

    solo = Policy.from_checkpoint(checkpoints["msg_passing"])
    solo.replan_every = 3
    solo_env = BimanualEnv(WorldConfig(image_size=16))
    solo_obs = solo_env.reset("lift", eval_seeds("lift", 3)[2])
    for step in range(5):
        acts = policy.select_actions(batch(obs))
        assert acts["action_a"].shape == (3, policy.num_joints) and acts["grip_b"].shape == (3,)
        obs = [e.step({k: v[i] for k, v in acts.items()})[0] for i, e in enumerate(envs)]
        if step == 1:  # env 0 starts a new episode mid-way; the others keep their history
            obs[0] = envs[0].reset("handoff", eval_seeds("handoff", 1)[0])
            policy.reset([0])
        mine = solo.select_action(solo_obs)
        solo_obs = solo_env.step(mine)[0]
        np.testing.assert_allclose(acts["action_a"][2], mine["action_a"], atol=1e-4)
