"""Checkpoints: latest pointer, keep-last-K, load_policy round trip, loading without torch, no pickle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from teamvla_data import MultiTaskDataset, NormalizationStats  # noqa: E402
from teamvla_schema import SchemaError  # noqa: E402
from teamvla_schema.config import from_dict  # noqa: E402
from teamvla_train.config import ModelConfig  # noqa: E402
from teamvla_train.engine import train  # noqa: E402
from teamvla_train.engine.checkpointing import read_latest, resolve_checkpoint  # noqa: E402
from teamvla_train.models import make_model  # noqa: E402
from teamvla_train.policy import load_policy  # noqa: E402
from train_testlib import run_python, tiny_config, write_tiny_dataset  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """A 6-step run on a tiny dataset with a checkpoint every 2 steps, keeping 2."""
    base = tmp_path_factory.mktemp("ckpt")
    root = write_tiny_dataset(base / "episodes")
    cfg = tiny_config(
        root, trainer={"max_steps": 6, "ckpt_every": 2, "keep_last": 2, "val_every": 3}
    )
    result = train(cfg, run_dir=base / "run", progress=False)
    return base / "run", root, {"cfg": cfg, "result": result}


def test_latest_pointer_and_keep_last(trained: tuple[Path, Path, dict]) -> None:
    run, _, info = trained
    ckpt_dir = run / "checkpoints" / "multi"
    names = sorted(p.name for p in ckpt_dir.glob("*.ckpt"))
    assert names == ["epoch_0001_step_00000004.ckpt", "epoch_0001_step_00000006.ckpt"]
    pointer = read_latest(ckpt_dir)
    assert (
        pointer["checkpoint"] == names[-1] and pointer["step"] == 6 and pointer["history"] == names
    )
    newest = ckpt_dir / names[-1]
    assert resolve_checkpoint(run) == newest
    assert resolve_checkpoint(ckpt_dir / "latest") == newest
    assert info["result"].last_checkpoint == newest
    assert not [p for p in ckpt_dir.iterdir() if p.name.endswith(".tmp")]


def test_load_policy_matches_a_manual_reconstruction(trained: tuple[Path, Path, dict]) -> None:
    run, root, _ = trained
    path = resolve_checkpoint(run)
    policy = load_policy(path)
    assert (policy.obs_history, policy.action_horizon, policy.num_joints, policy.image_size) == (
        1,
        4,
        7,
        (16, 16),
    )
    assert not policy.model.training

    # Reference built independently: safetensors reader + the loader's own statistics class.
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    ckpt_cfg = policy.config
    assert ckpt_cfg["model"]["name"] == "single_brain"
    ref = make_model(from_dict(ModelConfig, ckpt_cfg["model"]), obs_history=1, action_horizon=4)
    ref.load_state_dict(
        {
            k[len("model/") :]: torch.from_numpy(v)
            for k, v in tensors.items()
            if k.startswith("model/")
        }
    )
    ref.eval()
    stats = NormalizationStats.from_dict(policy.stats)

    raw = MultiTaskDataset(root, obs_history=1, action_horizon=4).__getitems__([0, 5, 13, 30])
    obs = {k: raw[k] for k in ("rgb_a", "rgb_b", "q_a", "q_b", "obs_is_pad", "instruction")}
    out = policy.predict_chunk(obs)

    with torch.no_grad():
        batch = {
            **{k: torch.from_numpy(raw[k]) for k in ("rgb_a", "rgb_b", "obs_is_pad")},
            "q_a": torch.from_numpy(stats.normalize("q_a", raw["q_a"])),
            "q_b": torch.from_numpy(stats.normalize("q_b", raw["q_b"])),
            "instruction": raw["instruction"],
        }
        want = ref.predict(batch)
    for arm in ("a", "b"):
        expected = stats.unnormalize(f"action_{arm}", want[f"action_{arm}"].numpy())
        np.testing.assert_allclose(out[f"action_{arm}"], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            out[f"grip_{arm}"], torch.sigmoid(want[f"grip_{arm}"]).numpy(), rtol=1e-6
        )
        assert out[f"action_{arm}"].dtype == np.float32 and out[f"action_{arm}"].shape == (4, 4, 7)
        assert out[f"grip_{arm}"].dtype == np.float32 and out[f"grip_{arm}"].shape == (4, 4)
    # The raw action scale is restored (normalised outputs would sit near 0 with unit spread).
    assert abs(float(out["action_a"].mean()) - float(raw["action_a"].mean())) < 1.0


def test_policy_rejects_a_wrong_window(trained: tuple[Path, Path, dict]) -> None:
    policy = load_policy(trained[0])
    obs = {
        "rgb_a": np.zeros((2, 3, 16, 16, 3), np.uint8),  # To = 3, the policy wants 2
        "rgb_b": np.zeros((2, 3, 16, 16, 3), np.uint8),
        "q_a": np.zeros((2, 3, 7), np.float32),
        "q_b": np.zeros((2, 3, 7), np.float32),
        "obs_is_pad": np.zeros((2, 3), bool),
        "instruction": ["lift the cube"] * 2,
    }
    with pytest.raises(ValueError, match="obs_is_pad"):
        policy.predict_chunk(obs)
    obs["obs_is_pad"] = np.zeros((2, 2), bool)
    with pytest.raises(ValueError, match=r"rgb_a.*To=2"):
        policy.predict_chunk(obs)


def test_policy_resizes_other_image_sizes(trained: tuple[Path, Path, dict]) -> None:
    policy = load_policy(trained[0])
    obs = {
        "rgb_a": np.full((1, 2, 32, 32, 3), 77, np.uint8),
        "rgb_b": np.full((1, 2, 32, 32, 3), 200, np.uint8),
        "q_a": np.zeros((1, 2, 7), np.float32),
        "q_b": np.zeros((1, 2, 7), np.float32),
        "obs_is_pad": np.array([[True, False]]),
        "instruction": ["lift the cube"],
    }
    small = {**obs, "rgb_a": obs["rgb_a"][:, :, :16, :16], "rgb_b": obs["rgb_b"][:, :, :16, :16]}
    big_out, small_out = policy.predict_chunk(obs), policy.predict_chunk(small)
    np.testing.assert_allclose(big_out["action_a"], small_out["action_a"], atol=1e-5)


def test_checkpoint_loads_with_numpy_alone(trained: tuple[Path, Path, dict]) -> None:
    path = resolve_checkpoint(trained[0])
    code = f"""
import json, sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
from teamvla_schema import load_checkpoint
from teamvla_schema.config import config_from_checkpoint
ck = load_checkpoint({str(path)!r})
print(json.dumps({{
    "sections": sorted(k for k in ck if k != "format_version"),
    "step": ck["training_state"]["step"],
    "model": ck["config"]["model"]["name"],
    "stats_format": ck["stats"]["format"],
    "policy": sorted(ck["extra"]["policy"]),
    "weights": sum(v.size for v in ck["model"].values()),
    "config_model": config_from_checkpoint({str(path)!r}).data["model"]["name"],
}}))
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["sections"] == [
        "config",
        "extra",
        "model",
        "optimizer",
        "scheduler",
        "stats",
        "training_state",
    ]
    assert info["step"] == 6 and info["model"] == info["config_model"] == "single_brain"
    assert info["stats_format"] == "teamvla-stats"
    assert info["policy"] == [
        "action_horizon",
        "image_size",
        "model",
        "normalization",
        "num_joints",
        "obs_history",
    ]
    assert info["weights"] == sum(p.numel() for p in load_policy(path).model.state_dict().values())


def test_load_policy_refuses_pickles(tmp_path: Path) -> None:
    bad = tmp_path / "model.ckpt"
    torch.save({"weights": torch.zeros(3)}, bad)
    with pytest.raises(SchemaError, match="pickle"):
        load_policy(bad)
    with pytest.raises(SchemaError, match="latest"):
        load_policy(tmp_path)
