"""Policies: shapes, masked losses, interchangeability, instruction hashing, learning a tiny batch."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from teamvla_data import batch as keys  # noqa: E402
from teamvla_train.algos.bc_loss import bc_loss  # noqa: E402
from teamvla_train.config import ModelConfig  # noqa: E402
from teamvla_train.models import MODELS, BimanualPolicy, make_model  # noqa: E402
from teamvla_train.models.encoders import HashedTextEncoder, instruction_ids  # noqa: E402
from teamvla_train.synthetic import synthetic_batch  # noqa: E402
from train_testlib import TINY_MODEL, run_python  # noqa: E402


def tiny_model(name: str, *, obs_history: int = 1, action_horizon: int = 4, **kw) -> BimanualPolicy:
    torch.manual_seed(0)
    return make_model(
        ModelConfig(name=name, **{**TINY_MODEL, **kw}),
        obs_history=obs_history,
        action_horizon=action_horizon,
    )


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize(
    ("obs_history", "vision_frames", "vision_film"), [(0, 1, False), (2, 1, True), (2, 0, True)]
)
def test_forward_shapes_and_loss(
    name: str, obs_history: int, vision_frames: int, vision_film: bool
) -> None:
    model = tiny_model(
        name,
        obs_history=obs_history,
        action_horizon=3,
        vision_frames=vision_frames,
        vision_film=vision_film,
    )
    assert model.vision_frames == (vision_frames or obs_history + 1)
    batch = synthetic_batch(
        batch_size=5,
        obs_history=obs_history,
        action_horizon=3,
        image_size=(20, 20),
        pad_fraction=0.5,
    )
    out = model.predict(batch)
    assert out[keys.ACTION_A].shape == out[keys.ACTION_B].shape == (5, 3, 7)
    assert out[keys.GRIP_A].shape == out[keys.GRIP_B].shape == (5, 3)
    loss, metrics = bc_loss(model(batch), batch, model.cfg)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert {"loss", "joint_a", "joint_b", "grip_a", "grip_b", "grip_acc"} <= set(metrics)
    assert all(not v.requires_grad for v in metrics.values())
    loss.backward()
    heads = [p for n, p in model.named_parameters() if "head" in n]
    assert heads and all(p.grad is not None and p.grad.abs().sum() > 0 for p in heads)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_padded_steps_do_not_contribute(name: str) -> None:
    model = tiny_model(name).eval()
    batch = synthetic_batch(
        batch_size=6, obs_history=1, action_horizon=4, image_size=(16, 16), pad_fraction=1.0, seed=3
    )
    pad = batch[keys.ACTION_IS_PAD]
    assert pad.any() and (~pad).any()
    with torch.no_grad():
        loss, _ = bc_loss(model(batch), batch, model.cfg)
        garbage = dict(batch)
        for key in (keys.ACTION_A, keys.ACTION_B):
            garbage[key] = torch.where(pad[..., None], torch.full_like(batch[key], 1e6), batch[key])
        garbage[keys.GRIP_A] = torch.where(
            pad, torch.full_like(batch[keys.GRIP_A], float("nan")), batch[keys.GRIP_A]
        )
        garbage[keys.GRIP_B] = torch.where(pad, 1.0 - batch[keys.GRIP_B], batch[keys.GRIP_B])
        loss_garbage, _ = bc_loss(model(garbage), garbage, model.cfg)
        assert torch.equal(loss, loss_garbage)
        # ...while a change to a valid step does change it.
        changed = dict(batch)
        changed[keys.ACTION_A] = torch.where(
            ~pad[..., None], batch[keys.ACTION_A] + 1.0, batch[keys.ACTION_A]
        )
        assert not torch.allclose(bc_loss(model(changed), changed, model.cfg)[0], loss)


@pytest.mark.parametrize("kind", ["l1", "mse"])
def test_joint_loss_kind(kind: str) -> None:
    model = tiny_model("single_brain", joint_loss=kind, grip_weight=0.0).eval()
    batch = synthetic_batch(batch_size=4, obs_history=1, action_horizon=4, image_size=(16, 16))
    with torch.no_grad():
        out = model.predict(batch)
        _, metrics = bc_loss(model(batch), batch, model.cfg)
    diff = out[keys.ACTION_A] - batch[keys.ACTION_A]
    want = diff.abs().mean() if kind == "l1" else diff.square().mean()
    torch.testing.assert_close(metrics["joint_a"], want)


def test_conv_strides_set_the_keypoint_map_size() -> None:
    coarse = tiny_model("single_brain")  # image 16, two stride-2 layers: 4x4 map
    fine = tiny_model("single_brain", conv_strides=[2, 1])  # 8x8 map
    x = torch.rand(3, 3, 16, 16)
    assert coarse.cameras.nets[0].net(x).shape[-2:] == (4, 4)
    assert fine.cameras.nets[0].net(x).shape[-2:] == (8, 8)
    assert fine.cfg.feature_map_size() == 8
    batch = synthetic_batch(batch_size=2, obs_history=1, action_horizon=4, image_size=(16, 16))
    assert fine.predict(batch)[keys.ACTION_A].shape == (2, 4, 7)


def test_vision_film_conditions_the_keypoints_on_the_instruction() -> None:
    model = tiny_model("single_brain", vision_film=True).eval()
    for p in model.cameras.parameters():  # leave FiLM's identity start
        torch.nn.init.normal_(p, std=0.3)
    batch = synthetic_batch(batch_size=2, obs_history=1, action_horizon=4, image_size=(16, 16))
    with torch.no_grad():
        red = model.encode({**batch, keys.INSTRUCTION: ["lift the red block"] * 2})["vision"]
        blue = model.encode({**batch, keys.INSTRUCTION: ["lift the blue block"] * 2})["vision"]
    assert not torch.allclose(red, blue)


def test_models_are_interchangeable_by_config() -> None:
    batch = synthetic_batch(batch_size=3, obs_history=1, action_horizon=4, image_size=(16, 16))
    outs = {}
    for name in MODELS:
        model = tiny_model(name)
        assert type(model) is MODELS[name] and isinstance(model, BimanualPolicy)
        outs[name] = {k: tuple(v.shape) for k, v in model.predict(batch).items()}
    assert outs["single_brain"] == outs["msg_passing"]


def test_msg_passing_rounds_carry_the_other_arm() -> None:
    # With no message rounds arm A's output ignores arm B's observations; with rounds it does not.
    batch = synthetic_batch(batch_size=3, obs_history=0, action_horizon=2, image_size=(16, 16))
    other = dict(batch)
    other[keys.Q_B] = batch[keys.Q_B] + 1.0
    for rounds, should_change in ((0, False), (2, True)):
        model = tiny_model("msg_passing", obs_history=0, action_horizon=2, msg_rounds=rounds)
        for p in model.parameters():  # leave the zero-initialised heads' starting point
            torch.nn.init.normal_(p, std=0.2)
        with torch.no_grad():
            a1 = model.predict(batch)[keys.ACTION_A]
            a2 = model.predict(other)[keys.ACTION_A]
        assert (not torch.allclose(a1, a2)) == should_change


def test_predict_delta_starts_by_holding_position() -> None:
    model = tiny_model("single_brain", predict_delta=True).eval()
    rng = np.random.default_rng(0)
    q_off, q_sc = rng.normal(size=(2, 7)), rng.uniform(0.5, 2, size=(2, 7))
    a_off, a_sc = rng.normal(size=(2, 7)), rng.uniform(0.5, 2, size=(2, 7))
    model.set_normalization(q_offset=q_off, q_scale=q_sc, action_offset=a_off, action_scale=a_sc)
    batch = synthetic_batch(batch_size=4, obs_history=1, action_horizon=4, image_size=(16, 16))
    with torch.no_grad():
        out = model.predict(batch)
    raw_q = batch[keys.Q_A][:, -1].double() * torch.from_numpy(q_sc[0]) + torch.from_numpy(q_off[0])
    raw_action = out[keys.ACTION_A].double() * torch.from_numpy(a_sc[0]) + torch.from_numpy(
        a_off[0]
    )
    torch.testing.assert_close(
        raw_action, raw_q[:, None, :].expand_as(raw_action), atol=1e-5, rtol=1e-5
    )


def test_instruction_hashing_is_deterministic_across_processes() -> None:
    text = "Hand the RED cube to arm B, then release"
    here = instruction_ids(text, buckets=4096, ngram=3)
    code = (
        "import json, sys; from teamvla_train.text_hashing import instruction_ids; "
        f"print(json.dumps(instruction_ids({text!r}, buckets=4096, ngram=3))); assert 'torch' not in sys.modules"
    )
    for seed in ("1", "2"):
        proc = run_python(code, env={"PYTHONHASHSEED": seed})
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == here
    assert instruction_ids("lift the cube", buckets=4096, ngram=3) != instruction_ids(
        "open the drawer", buckets=4096, ngram=3
    )
    # Case and punctuation do not matter; word order does.
    assert instruction_ids("Lift the cube!", buckets=64, ngram=3) == instruction_ids(
        "lift the cube", buckets=64, ngram=3
    )


@pytest.mark.parametrize(
    ("layers", "pool"), [(0, "mean"), (1, "mean"), (0, "attention"), (1, "attention")]
)
def test_text_encoder_embeds_each_string_independently_of_the_batch(layers: int, pool: str) -> None:
    torch.manual_seed(0)
    enc = HashedTextEncoder(buckets=128, ngram=3, dim=16, layers=layers, heads=2, pool=pool).eval()
    with torch.no_grad():
        alone = enc(["open the drawer"])
        mixed = enc(["lift", "open the drawer", "lift", "hand the cube over to the other arm"])
    assert mixed.shape == (4, 16)
    torch.testing.assert_close(mixed[1], alone[0])
    torch.testing.assert_close(mixed[0], mixed[2])
    assert not torch.allclose(mixed[0], mixed[1])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_overfits_a_tiny_batch(name: str) -> None:
    torch.set_num_threads(1)
    model = tiny_model(name)
    batch = synthetic_batch(
        batch_size=8, obs_history=1, action_horizon=4, image_size=(16, 16), seed=1
    )
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    first = None
    for _ in range(150):
        loss, _ = bc_loss(model(batch), batch, model.cfg)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = bc_loss(model(batch), batch, model.cfg)[0].item()
    assert final < first / 10, (first, final)
