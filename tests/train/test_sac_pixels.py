"""The pixel path of SAC and AWAC: the uint8 replay, the random shift, demonstrations read from a
recorded dataset through the dataloader, the shared/separate encoder, a tiny pixel SAC run that
resumes halfway, and online episodes written out as ordinary episodes."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from teamvla_schema import SchemaError  # noqa: E402
from teamvla_schema.checkpoint import load_checkpoint  # noqa: E402
from teamvla_train.algos.pixel_replay import PixelReplayBuffer, random_shift  # noqa: E402
from teamvla_train.algos.replay import NStep, sample_mixed  # noqa: E402
from train_testlib import one_torch_thread, tiny_pixel_config, write_tiny_dataset  # noqa: E402, F401


def _obs(n: int, value: int, size: int = 4) -> dict:
    return {"rgb_a": np.full((n, size, size, 3), value, np.uint8),
            "rgb_b": np.full((n, size, size, 3), value + 1, np.uint8),
            "proprio": np.full((n, 4), value, np.float32),
            "instruction": np.array([f"lift {value}"] * n, dtype=object)}  # fmt: skip


def _rows(n: int, value: int) -> dict:
    return {"obs": _obs(n, value), "next_obs": _obs(n, value + 10),
            "action": np.full((n, 3), value / 10, np.float32), "reward": np.full(n, value, np.float32),
            "done": np.zeros(n, bool), "nsteps": np.ones(n, np.float32)}  # fmt: skip


def test_pixel_replay_stores_uint8_bounded_and_round_trips() -> None:
    buf = PixelReplayBuffer(capacity=5, image_size=(4, 4), proprio_dim=4, action_dim=3)
    # images stay uint8: no float copy of any image anywhere in the ring
    assert {buf.arrays[k].dtype for k in ("rgb_a", "rgb_b", "next_rgb_a", "next_rgb_b")} == {np.dtype(np.uint8)}  # fmt: skip
    assert not any(a.dtype.kind == "f" and a.ndim == 4 for a in buf.arrays.values())
    # 4 images of 4x4x3 bytes + 2 x 4 float32 proprio + int32 id + 3 float32 action + reward,
    # nsteps (float32) + done (bool)
    assert buf.bytes_per_transition == 4 * 48 + 32 + 4 + 12 + 8 + 1
    buf.add_batch(**_rows(3, 1))
    buf.add_batch(**_rows(4, 2))  # wraps: rows 0, 1 overwritten
    assert (len(buf), buf.pos, buf.added) == (5, 2, 7)
    assert buf.arrays["reward"].tolist() == [2, 2, 1, 2, 2]
    assert buf.arrays["next_rgb_b"][:, 0, 0, 0].tolist() == [13, 13, 12, 13, 13]
    assert buf.instructions == ["lift 1", "lift 2"]
    state = buf.state_dict()
    assert state["rgb_a"].dtype == np.uint8 and state["rgb_a"].shape == (5, 4, 4, 3)
    other = PixelReplayBuffer(capacity=5, image_size=(4, 4), proprio_dim=4, action_dim=3)
    other.load_state_dict(state)
    for key, arr in buf.arrays.items():
        assert np.array_equal(other.arrays[key], arr), key
    assert (other.pos, other.size, other.added, other.instructions) == (buf.pos, buf.size, buf.added, buf.instructions)  # fmt: skip
    a, b = buf.sample(8, np.random.default_rng(1)), other.sample(8, np.random.default_rng(1))
    assert all(np.array_equal(a[k], b[k]) for k in a) and a["rgb_a"].dtype == np.uint8
    assert set(a["instruction"]) <= {"lift 1", "lift 2"}
    with pytest.raises(ValueError, match="capacity"):
        PixelReplayBuffer(capacity=6, image_size=(4, 4), proprio_dim=4, action_dim=3).load_state_dict(state)  # fmt: skip
    with pytest.raises(ValueError, match="rgb_a"):
        PixelReplayBuffer(capacity=5, image_size=(8, 8), proprio_dim=4, action_dim=3).load_state_dict(state)  # fmt: skip
    # RLPD's symmetric mixing works on pixel buffers as on state ones
    demo = PixelReplayBuffer(capacity=4, image_size=(4, 4), proprio_dim=4, action_dim=3)
    demo.add_batch(**_rows(4, 7))
    mixed = sample_mixed(online=buf, demo=demo, n=10, demo_ratio=0.5, rng=np.random.default_rng(0))
    assert mixed["reward"].tolist()[:5] == [7.0] * 5 and 7.0 not in mixed["reward"].tolist()[5:]
    assert list(mixed["instruction"][:5]) == ["lift 7"] * 5


class _Draws:
    """A generator stub that returns the given shifts (dy first, then dx)."""

    def __init__(self, *draws: list[int]) -> None:
        self.draws = list(draws)

    def integers(self, low: int, high: int, size: int) -> np.ndarray:
        out = np.array(self.draws.pop(0))
        assert out.shape == (size,) and low <= out.min() and out.max() < high
        return out


def test_random_shift_hand_checked() -> None:
    img = np.arange(9, dtype=np.uint8).reshape(1, 3, 3, 1)  # [[0 1 2] [3 4 5] [6 7 8]]
    # down by one row, left by one column: out[r, c] = img[min(r + 1, 2), max(c - 1, 0)]
    out = random_shift(img, 1, _Draws([1], [-1]))  # type: ignore[arg-type]
    assert out[0, :, :, 0].tolist() == [[3, 3, 4], [6, 6, 7], [6, 6, 7]]
    out = random_shift(img, 1, _Draws([-1], [1]))  # type: ignore[arg-type]
    assert out[0, :, :, 0].tolist() == [[1, 2, 2], [1, 2, 2], [4, 5, 5]]
    assert out.dtype == np.uint8
    assert random_shift(img, 0, np.random.default_rng(0)) is img  # pad 0: off
    # each image draws its own shift within [-pad, pad]: 64 images of a 9x9 ramp, pad 4
    ramp = np.tile(np.arange(81, dtype=np.uint8).reshape(1, 9, 9, 1), (64, 1, 1, 1))
    shifted = random_shift(ramp, 4, np.random.default_rng(3))
    centre = shifted[:, 4, 4, 0].astype(int)  # = 9 (4 + dy) + (4 + dx)
    dy, dx = centre // 9 - 4, centre % 9 - 4
    assert dy.min() >= -4 and dy.max() <= 4 and dx.min() >= -4 and dx.max() <= 4
    assert len(set(zip(dy.tolist(), dx.tolist(), strict=True))) > 20


def test_nstep_index_matches_the_online_accumulator() -> None:
    """The recorded-episode n-step rule equals NStep's on the same rewards (termination and truncation)."""
    from teamvla_train.algos.demo_replay import nstep_index

    rewards = np.array([0.0, 0.5, 0.0, 1.0, 2.0, 0.0], np.float32)  # T = 6: 5 transitions
    for terminated in (True, False):
        acc = NStep(n=3, gamma=0.9, num_envs=1)
        parts = []
        for t in range(5):
            end = t == 4
            parts.append(acc.push(obs=np.array([[t]], np.float32), action=np.zeros((1, 1), np.float32),
                                  reward=rewards[t : t + 1], next_obs=np.array([[t + 1]], np.float32),
                                  terminated=np.array([end and terminated]),
                                  truncated=np.array([end and not terminated])))  # fmt: skip
        online = {k: np.concatenate([p[k] for p in parts]) for k in ("obs", "reward", "next_obs", "done", "nsteps")}  # fmt: skip
        order = np.argsort(online["obs"][:, 0])
        got = nstep_index(rewards, terminated=terminated, n=3, gamma=0.9)
        assert np.array_equal(got["next"], online["next_obs"][order, 0].astype(int))
        assert np.allclose(got["reward"], online["reward"][order])
        assert np.array_equal(got["nsteps"], online["nsteps"][order])
        assert np.array_equal(got["done"], online["done"][order])
    got = nstep_index(rewards, terminated=True, n=3, gamma=0.9)
    assert got["reward"][1] == pytest.approx(0.5 + 0.0 + 0.81 * 1.0)  # t = 1: k = 3
    assert got["nsteps"].tolist() == [3, 3, 3, 2, 1] and got["done"].tolist() == [False, False, True, True, True]  # fmt: skip


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One scripted lift episode at 32 px, recorded as teamvla synth does (reward and done included)."""
    from teamvla_data.sim import generate_dataset

    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, tasks=["lift"], episodes_per_task=1, image_size=32, progress=False)
    return root


def _amap():
    from teamvla_data.sim.gym_env import action_space
    from teamvla_train.models.sac_nets import ActionMap

    return ActionMap(space=action_space(7), mode="delta", joint_step=0.15, binary_grip=True)


def test_dataset_demo_transitions_equal_the_episode_file(recorded: Path, tmp_path: Path) -> None:
    """Hand-picked transitions: observation, mapped action, n-step return, next observation, done."""
    from teamvla_schema.episode import read_episode
    from teamvla_train.algos.demo_replay import dataset_transitions

    amap = _amap()
    out = dataset_transitions(roots=[recorded], tasks=["lift"], image_size=32, amap=amap, n_step=3, gamma=0.9)  # fmt: skip
    ep = read_episode(next(recorded.glob("lift/*.npz")))
    a, length = ep.arrays, ep.meta.num_steps
    assert len(out["reward"]) == length - 1 and bool(a["success"][-1])  # the expert succeeded
    assert out["obs"]["rgb_a"].dtype == np.uint8 and out["obs"]["rgb_a"].shape[1:] == (32, 32, 3)
    for t in (5, length - 3):
        k = min(3, length - 1 - t)
        assert np.array_equal(out["obs"]["rgb_a"][t], a["rgb_a"][t])
        assert np.array_equal(out["obs"]["rgb_b"][t], a["rgb_b"][t])
        grip_state = [a["grip_a"][t - 1], a["grip_b"][t - 1]]  # the previous step's command
        assert np.array_equal(out["obs"]["proprio"][t], np.concatenate([a["q_a"][t], a["q_b"][t], grip_state]))  # fmt: skip
        assert out["obs"]["instruction"][t] == a["instruction"][t]
        # delta actions: (target - q) / 0.15, binary grips +-0.5
        want = np.concatenate([(a["action_a"][t] - a["q_a"][t]) / 0.15, (a["action_b"][t] - a["q_b"][t]) / 0.15,
                               [0.5 if a["grip_a"][t] > 0.5 else -0.5, 0.5 if a["grip_b"][t] > 0.5 else -0.5]])  # fmt: skip
        assert np.allclose(out["action"][t], np.clip(want, -1, 1), atol=1e-5)
        assert out["reward"][t] == pytest.approx(sum(0.9**i * float(a["reward"][t + i]) for i in range(k)))  # fmt: skip
        assert out["nsteps"][t] == k
        assert np.array_equal(out["next_obs"]["rgb_a"][t], a["rgb_a"][t + k])
        assert np.array_equal(out["next_obs"]["proprio"][t][:14], np.concatenate([a["q_a"][t + k], a["q_b"][t + k]]))  # fmt: skip
        assert bool(out["done"][t]) == (t + k == length - 1)  # success: no bootstrap past the end
    t = length - 3  # hand check: the last two rewards, the success one discounted once
    assert out["reward"][t] == pytest.approx(a["reward"][t] + 0.9 * a["reward"][t + 1])
    assert a["reward"][length - 2] > 0 and out["done"][t]
    assert out["obs"]["proprio"][0][-2:].tolist() == [0.0, 0.0]  # open at the start
    # an older dataset without reward/done: the error names the file and the field
    old = write_tiny_dataset(tmp_path / "old", tasks=("lift",), episodes_per_task=1, steps=4)
    with pytest.raises(SchemaError, match="reward") as info:
        dataset_transitions(roots=[old], tasks=["lift"], image_size=16, amap=amap, n_step=1, gamma=0.9)  # fmt: skip
    assert info.value.path is not None and str(info.value.path).endswith(".npz")
    assert info.value.field == "reward"


def _pixel_batch(b: int = 6) -> dict:
    g = np.random.default_rng(0)
    obs = lambda: {"rgb_a": g.integers(0, 256, (b, 32, 32, 3), dtype=np.uint8),  # noqa: E731
                   "rgb_b": g.integers(0, 256, (b, 32, 32, 3), dtype=np.uint8),
                   "proprio": g.normal(size=(b, 16)).astype(np.float32),
                   "instruction": np.array(["lift the red block"] * b, dtype=object)}  # fmt: skip
    o, n = obs(), obs()
    return {**o, **{f"next_{k}": v for k, v in n.items() if k != "instruction"},
            "action": g.uniform(-1, 1, (b, 16)).astype(np.float32), "reward": g.random(b).astype(np.float32),
            "done": np.zeros(b, bool), "nsteps": np.ones(b, np.float32)}  # fmt: skip


def _changed(module: torch.nn.Module, before: dict) -> bool:
    return any(not torch.equal(v, before[k]) for k, v in module.state_dict().items())


@pytest.mark.parametrize("encoder", ["shared", "separate"])
def test_encoder_gradients_shared_and_separate(encoder: str) -> None:
    """shared: the critic loss trains the one encoder, the actor reads it detached; separate: the
    actor's loss trains the actor's own encoder."""
    from teamvla_train.algos.pixel import (
        batch_to_torch,
        build_pixel_nets,
        encode_batch,
        pixel_optimizers,
    )
    from teamvla_train.algos.sac import sac_update
    from teamvla_train.model_config import ModelConfig

    cfg = ModelConfig(image_size=32, conv_channels=[8, 16], vision_dim=16, text_dim=16, proprio_dim=16, text_buckets=256)  # fmt: skip
    s = SimpleNamespace(encoder=encoder, hidden_dims=[32], critic_layer_norm=True, actor_lr=1e-2, critic_lr=1e-2, alpha_lr=1e-2)  # fmt: skip
    torch.manual_seed(0)
    actor, critic, target = build_pixel_nets(model_cfg=cfg, num_joints=7, action_dim=16, s=s, grip_head="gaussian", device=torch.device("cpu"))  # fmt: skip
    assert (actor.encoder is critic.encoder) == (encoder == "shared")
    log_alpha = torch.zeros((), requires_grad=True)
    for critic_lr in (0.0, 1e-2):
        opts = pixel_optimizers(actor=actor, critic=critic, log_alpha=log_alpha, s=s)
        for group in opts["critic"].param_groups:
            group["lr"] = critic_lr
        enc_actor = {k: v.clone() for k, v in actor.encoder.state_dict().items()}
        enc_critic = {k: v.clone() for k, v in critic.encoder.state_dict().items()}
        head = {k: v.clone() for k, v in actor.head.state_dict().items()}
        batch = batch_to_torch(_pixel_batch(), device=torch.device("cpu"), augment=4, rng=np.random.default_rng(0))  # fmt: skip
        assert batch["obs"]["rgb_a"].dtype == torch.uint8
        feats = encode_batch(batch, actor=actor, critic=critic, s=s)
        assert (
            feats["obs"].shape == (6, critic.encoder.out_dim)
            and not feats["next_obs"].requires_grad
        )
        assert feats["actor_obs"].requires_grad == (encoder == "separate")
        sac_update(batch=feats, actor=actor.head, critic=critic.head, target_critic=target, log_alpha=log_alpha,
                   optimizers=opts, gamma=0.9, tau=0.5, target_entropy=-16.0)  # fmt: skip
        assert _changed(actor.head, head)
        assert _changed(critic.encoder, enc_critic) == (critic_lr > 0)
        if encoder == "separate":
            assert _changed(actor.encoder, enc_actor)  # trained by the actor's loss alone
    actor_params = {id(p) for g in opts["actor"].param_groups for p in g["params"]}
    assert any(id(p) in actor_params for p in actor.encoder.parameters()) == (encoder == "separate")


def _ckpt(run: Path) -> dict:
    from teamvla_train.engine.checkpointing import resolve_checkpoint

    return load_checkpoint(resolve_checkpoint(run))  # teamvla-schema alone: numpy, no pickle


@pytest.mark.slow
def test_tiny_pixel_sac_resumes_halfway_like_an_uninterrupted_run(tmp_path: Path) -> None:
    from teamvla_train import Policy
    from teamvla_train.engine import train
    from teamvla_train.models.pixel_policy import PixelPolicy

    n = 40  # transitions: 20 engine steps of 2 worlds
    common = ["sac.warmup_steps=20", "sac.n_step=1"]
    train(tiny_pixel_config("sac", f"sac.env_steps={2 * n}", *common), run_dir=tmp_path / "full", progress=False, device="cpu")  # fmt: skip
    train(tiny_pixel_config("sac", f"sac.env_steps={n}", *common), run_dir=tmp_path / "part", progress=False, device="cpu")  # fmt: skip
    train(tiny_pixel_config("sac", f"sac.env_steps={2 * n}", "trainer.resume_force=true", *common), run_dir=tmp_path / "part",
          resume="auto", progress=False, device="cpu")  # fmt: skip
    a, b = _ckpt(tmp_path / "full"), _ckpt(tmp_path / "part")
    sa, sb = a["training_state"]["sac"], b["training_state"]["sac"]
    assert set(a["optimizer"]) == {"actor", "critic", "alpha"}
    assert {"critic", "target_critic", "log_alpha", "replay"} <= set(sa)
    assert sa["env_steps"] == sb["env_steps"] == 2 * n
    assert sa["updates"] == sb["updates"] == 2 * ((2 * n - 20) // 2 + 1)
    ra, rb = sa["replay"], sb["replay"]
    assert int(ra["size"]) == int(rb["size"]) == 2 * n
    assert ra["rgb_a"].dtype == np.uint8 and ra["rgb_a"].shape == (2 * n, 32, 32, 3)
    for key in ("rgb_a", "rgb_b", "next_rgb_a", "proprio", "action", "reward", "instruction"):
        assert np.array_equal(ra[key][:n], rb[key][:n]), key  # restored, not re-collected
    texts = lambda r: [r["instructions"][i] for i in r["instruction"][:n]]  # noqa: E731
    assert texts(ra) == texts(rb)
    # the actor: an ordinary teamvla checkpoint, encoder and head, for Policy.from_checkpoint
    assert any(k.startswith("encoder.cameras.") for k in a["model"]) and any(k.startswith("head.") for k in a["model"])  # fmt: skip
    assert a["extra"]["pixel_policy"]["encoder"] == "shared"
    policy = Policy.from_checkpoint(tmp_path / "full")
    assert isinstance(policy, PixelPolicy) and policy.image_size == (32, 32)
    from teamvla_data.sim import make_env

    env = make_env("lift", image_size=48)  # another camera size: the encoder resizes
    obs, _ = env.reset(seed=0)
    action = policy.select_action(obs)
    assert env.action_space.contains({k: np.asarray(v) for k, v in action.items()})
    assert {float(action["grip_a"]), float(action["grip_b"])} <= {0.0, 1.0}


@pytest.mark.slow
def test_recorded_online_episodes_validate_load_and_equal_the_replay(tmp_path: Path) -> None:
    """sac.record_online: finished episodes are ordinary, valid, manifest-indexed episodes, and read
    back as demos they give the very transitions the online replay holds."""
    from teamvla_data import MultiTaskDataset
    from teamvla_schema.episode import read_episode, validate_episode_file
    from teamvla_train.algos.demo_replay import dataset_transitions
    from teamvla_train.engine import train

    gamma = 0.99
    cfg = tiny_pixel_config(
        "sac", "sac.record_online=true", "sac.env_steps=160", "sac.warmup_steps=160", "sac.n_step=2"
    )
    train(cfg, run_dir=tmp_path / "run", progress=False, device="cpu")
    root = tmp_path / "run" / "online_episodes"
    files = sorted(root.glob("lift/online-*.npz"))
    assert len(files) >= 2  # each world finished an episode (lift: at most 70 steps)
    for f in files:
        header = validate_episode_file(f)
        assert {"reward", "done"} <= set(header.fields)
    assert (root / ".teamvla" / "manifest.json").is_file()
    ds = MultiTaskDataset(root, use_cache=False)
    assert len(ds.episodes) == len(files) and len(ds) == sum(e.num_steps for e in ds.episodes)
    replay = _ckpt(tmp_path / "run")["training_state"]["sac"]["replay"]
    rows = {(replay["rgb_a"][i].tobytes(), replay["proprio"][i].tobytes()): i for i in range(int(replay["size"]))}  # fmt: skip
    out = dataset_transitions(roots=[root], tasks=["lift"], image_size=32, amap=_amap(), n_step=2, gamma=gamma)  # fmt: skip
    assert len(out["reward"]) == sum(e.num_steps - 1 for e in ds.episodes)
    for t in range(len(out["reward"])):
        i = rows[(out["obs"]["rgb_a"][t].tobytes(), out["obs"]["proprio"][t].tobytes())]
        assert out["reward"][t] == pytest.approx(replay["reward"][i])
        assert (out["nsteps"][t], bool(out["done"][t])) == (
            replay["nsteps"][i],
            bool(replay["done"][i]),
        )
        assert np.array_equal(out["next_obs"]["rgb_b"][t], replay["next_rgb_b"][i])
        assert np.array_equal(out["next_obs"]["proprio"][t], replay["next_proprio"][i])
    # the recorded action is the executed one: the replay's flat action mapped to the env
    ep = read_episode(files[0])
    first = rows[(ep.arrays["rgb_a"][0].tobytes(), np.concatenate([ep.arrays["q_a"][0], ep.arrays["q_b"][0], [0, 0]]).astype(np.float32).tobytes())]  # fmt: skip
    env_action = _amap().to_env(replay["action"][first][None], replay["proprio"][first][None])
    assert np.array_equal(env_action["action_a"][0], ep.arrays["action_a"][0])
    assert float(env_action["grip_b"][0]) == float(ep.arrays["grip_b"][0])
    assert ep.arrays["done"].tolist() == [False] * (ep.meta.num_steps - 1) + [True]
    assert math.isclose(float(ep.arrays["reward"][-1]), 0.0)


def test_recorder_prune_deletes_episodes_after_the_checkpoint(tmp_path: Path) -> None:
    from teamvla_train.algos.online_record import EpisodeRecorder, episode_id

    rec = EpisodeRecorder(tmp_path / "online", tasks=["lift", "lift"])
    (tmp_path / "online" / "lift").mkdir()
    for steps in (70, 140, 210):
        (tmp_path / "online" / "lift" / f"{episode_id(steps, 1)}.npz").write_bytes(b"")
    removed = rec.prune(140)
    assert [p.name for p in removed] == ["online-000000210-001.npz"]
    assert sorted(p.name for p in (tmp_path / "online" / "lift").iterdir()) == [
        "online-000000070-001.npz", "online-000000140-001.npz",
    ]  # fmt: skip
