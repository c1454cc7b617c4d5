"""AWAC on pixels: demos from a recorded dataset (awac.demo_roots), resume in the offline phase equal
to an uninterrupted run, behaviour cloning training a shared encoder, init_from, and the pixel actor
behind Policy.from_checkpoint and teamvla eval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from teamvla_schema import SchemaError  # noqa: E402
from teamvla_schema.checkpoint import load_checkpoint  # noqa: E402
from train_testlib import one_torch_thread, tiny_pixel_config  # noqa: E402, F401


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two scripted lift episodes at 32 px, as teamvla synth records them."""
    from teamvla_data.sim import generate_dataset

    root = tmp_path_factory.mktemp("synth")
    generate_dataset(
        root, tasks=["lift"], episodes_per_task=2, seed=3, image_size=32, progress=False
    )
    return root


def _ckpt(run: Path) -> dict:
    from teamvla_train.engine.checkpointing import resolve_checkpoint

    return load_checkpoint(resolve_checkpoint(run))


def _algo(cfg, run: Path):
    from teamvla_train.algos.awac import AdvantageWeightedActorCritic
    from teamvla_train.algos.base import Context
    from teamvla_train.config import resolve_train_config
    from teamvla_train.engine.distributed import DistInfo

    ctx = Context(cfg=resolve_train_config(cfg), run_dir=run, device=torch.device("cpu"),
                  dist_info=DistInfo(), amp_dtype=None)  # fmt: skip
    return AdvantageWeightedActorCritic(ctx)


def test_demo_roots_fill_the_demo_buffer_through_the_dataloader(
    recorded: Path, tmp_path: Path
) -> None:
    from teamvla_data import MultiTaskDataset

    algo = _algo(
        tiny_pixel_config("awac", f"awac.demo_roots=[{recorded}]", "awac.demos_per_task=2"),
        tmp_path / "a",
    )
    try:
        episodes = MultiTaskDataset(recorded, use_cache=False).episodes
        assert len(algo.demo) == sum(e.num_steps - 1 for e in episodes)  # all but each last step
        assert (
            algo.demo.arrays["rgb_a"].dtype == np.uint8 and not (tmp_path / "a" / "demos").exists()
        )
        # n-step transitions reaching a successful end are terminal: min(n, T - 1) per episode
        n = algo.s.n_step
        want = sum(min(n, e.num_steps - 1) for e in episodes if e.success)
        assert int(algo.demo.arrays["done"][: len(algo.demo)].sum()) == want > 0
    finally:
        algo.close()
    with pytest.raises(SchemaError, match=r"awac.demo_roots .* needs env.obs_mode pixels"):
        _algo(
            tiny_pixel_config("awac", f"awac.demo_roots=[{recorded}]", "env.obs_mode=state"),
            tmp_path / "b",
        )


@pytest.mark.slow
def test_pixel_awac_offline_resume_bc_encoder_init_from_and_eval(
    recorded: Path, tmp_path: Path
) -> None:
    from teamvla_train import Policy
    from teamvla_train.engine import train
    from teamvla_train.evaluation import eval_config_from, evaluate_policy
    from teamvla_train.models.pixel_policy import PixelPolicy

    demos = [f"awac.demo_roots=[{recorded}]", "awac.demos_per_task=2", "awac.online_env_steps=0"]
    train(tiny_pixel_config("awac", "awac.offline_steps=12", *demos), run_dir=tmp_path / "full", progress=False, device="cpu")  # fmt: skip
    train(tiny_pixel_config("awac", "awac.offline_steps=6", *demos), run_dir=tmp_path / "part", progress=False, device="cpu")  # fmt: skip
    train(tiny_pixel_config("awac", "awac.offline_steps=12", "trainer.resume_force=true", *demos), run_dir=tmp_path / "part",
          resume="auto", progress=False, device="cpu")  # fmt: skip
    a, b = _ckpt(tmp_path / "full"), _ckpt(tmp_path / "part")
    sa, sb = a["training_state"]["awac"], b["training_state"]["awac"]
    assert sa["offline_updates"] == sb["offline_updates"] == 12
    for key in a["model"]:  # encoder and head of the actor
        assert np.array_equal(a["model"][key], b["model"][key]), key
    for key in sa["critic"]:
        assert np.array_equal(sa["critic"][key], sb["critic"][key]), key
    for key in sa["target_critic"]:
        assert np.array_equal(sa["target_critic"][key], sb["target_critic"][key]), key

    # behaviour cloning (no critic) with a shared encoder: the actor's loss trains the encoder
    bc = ["awac.weighting=uniform", "awac.train_critic=false", "awac.offline_steps=4", *demos]
    algo = _algo(tiny_pixel_config("awac", *bc), tmp_path / "bc-probe")
    try:
        before = {k: v.clone() for k, v in algo.actor.encoder.state_dict().items()}
        algo.train_step()
        assert any(
            not torch.equal(v, before[k]) for k, v in algo.actor.encoder.state_dict().items()
        )
    finally:
        algo.close()
    train(tiny_pixel_config("awac", *bc), run_dir=tmp_path / "bc", progress=False, device="cpu")
    bc_actor = _ckpt(tmp_path / "bc")["model"]
    algo = _algo(
        tiny_pixel_config("awac", f"awac.init_from={tmp_path / 'bc'}", *demos), tmp_path / "init"
    )
    try:
        for key, value in algo.actor.state_dict().items():
            assert np.array_equal(value.numpy(), bc_actor[key]), key
        assert algo.critic.encoder is algo.actor.encoder  # the critics start on the BC encoder too
    finally:
        algo.close()
    with pytest.raises(SchemaError, match="hidden_dims"):
        _algo(tiny_pixel_config("awac", f"awac.init_from={tmp_path / 'bc'}", "awac.hidden_dims=[16]", *demos), tmp_path / "x")  # fmt: skip

    policy = Policy.from_checkpoint(tmp_path / "full")
    assert isinstance(policy, PixelPolicy)
    cfg = eval_config_from(policy.config, episodes_per_task=1, tasks=["lift"], overrides=["eval.max_steps=6"])  # fmt: skip
    result = evaluate_policy(policy, cfg, progress=False)
    assert result["model"] == "awac-pixels-actor" and "offline" not in result
    assert result["closed_loop"]["lift"]["episodes"] == 1 and result["closed_loop"]["lift"]["swap_episodes"] == 1  # fmt: skip
