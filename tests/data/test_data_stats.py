"""Normalisation statistics: numpy reference, streaming histogram, keys, JSON, Normalize."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from data_testlib import write_episode, write_many
from teamvla_data import MultiTaskDataset, NormalizationStats, Normalize
from teamvla_data import batch as B
from teamvla_data.config import DatasetConfig
from teamvla_data.stats import HIST_BINS, RunningStats, compute_stats
from teamvla_schema import SchemaError, read_episode


def _reference(x: np.ndarray) -> dict[str, np.ndarray]:
    x = x.astype(np.float64)
    return {
        "mean": x.mean(0),
        "std": x.std(0),
        "min": x.min(0),
        "max": x.max(0),
        "p01": np.percentile(x, 1, axis=0, method="inverted_cdf"),
        "p99": np.percentile(x, 99, axis=0, method="inverted_cdf"),
    }


def _check(fs: object, x: np.ndarray, bins: int = HIST_BINS) -> None:
    ref = _reference(x)
    span = ref["max"] - ref["min"]
    for name in ("mean", "std", "min", "max"):
        np.testing.assert_allclose(getattr(fs, name), ref[name], rtol=1e-5, atol=1e-5, err_msg=name)
    for name in ("p01", "p99"):  # within one (final) bin width, at most ~4 * span / bins
        assert np.all(np.abs(getattr(fs, name) - ref[name]) <= 4 * span / bins + 1e-4), name


def test_running_stats_match_numpy_whatever_the_chunking() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(3, 2, (3000, 4)), rng.uniform(-40, 90, (1000, 4))]).astype(
        np.float32
    )
    x[:, 3] = 7.0  # a constant dimension
    for chunks in ([x], np.array_split(x, 37), np.array_split(x[::-1], 5)):
        rs = RunningStats((4,))
        for c in chunks:
            rs.update(c)
        _check(rs.result(), x)
        assert rs.result().count == len(x)


def test_histogram_grows_in_both_directions() -> None:
    # The first chunk fixes a tiny range; later chunks lie far below and above it.
    rs = RunningStats((), bins=64)
    parts = [np.full(10, 5.0), np.linspace(-1000, 0, 500), np.linspace(10, 3000, 500)]
    for p in parts:
        rs.update(p.astype(np.float32))
    x = np.concatenate(parts)[:, None]
    _check(rs.result(), x, bins=64)


def test_dataset_stats_cover_the_train_split_only(tmp_path: Path) -> None:
    write_many(tmp_path, [("lift", f"e{i}", i + 1, 3 + i % 3) for i in range(10)])
    train = MultiTaskDataset(tmp_path, split="train", val_fraction=0.3)
    stats = train.compute_stats(["q_a", "action_b", "grip_a"])
    # Reference straight from the episodes of the train split, read independently of the cache.
    q, act, grip = [], [], []
    for info in train.episodes:
        ep = read_episode(info.path, ["q_a", "action_b", "grip_a"])
        q.append(ep.arrays["q_a"])
        act.append(ep.arrays["action_b"])
        grip.append(ep.arrays["grip_a"])
    _check(stats.fields["q_a"], np.concatenate(q))
    _check(stats.fields["action_b"], np.concatenate(act))
    _check(stats.fields["grip_a"], np.concatenate(grip)[:, None])
    assert stats.fields["grip_a"].mean.shape == () and stats.fields["q_a"].mean.shape == (7,)
    assert stats.num_episodes == len(train.episodes) == 7
    val = MultiTaskDataset(tmp_path, split="val", val_fraction=0.3)
    assert val.stats_key(["q_a", "action_b", "grip_a"]) == stats.key  # val uses train's statistics


def test_stats_saved_reloaded_and_keyed(episode_root: Path) -> None:
    ds = MultiTaskDataset(episode_root)
    stats = ds.load_or_compute_stats()
    path = ds.stats_path()
    assert path.exists() and json.loads(path.read_text())["key"] == stats.key == ds.stats_key()
    again = MultiTaskDataset(episode_root).load_or_compute_stats()
    assert again.to_dict() == stats.to_dict()
    # Other fields or other episodes give other keys.
    assert ds.stats_key(["q_a"]) != ds.stats_key()
    write_episode(episode_root, "lift", "more", seed=20)
    assert MultiTaskDataset(episode_root).stats_key() != stats.key


def test_to_dict_round_trip_is_json(episode_root: Path) -> None:
    stats = MultiTaskDataset(episode_root).compute_stats(mode="min_max")
    doc = json.loads(json.dumps(stats.to_dict()))
    back = NormalizationStats.from_dict(doc)
    assert back.key == stats.key and back.mode == "min_max"
    for name, fs in stats.fields.items():
        for attr in ("mean", "std", "min", "max", "p01", "p99"):
            np.testing.assert_array_equal(getattr(back.fields[name], attr), getattr(fs, attr))
    with pytest.raises(SchemaError, match="format"):
        NormalizationStats.from_dict({"fields": {}})
    with pytest.raises(SchemaError, match="version"):
        NormalizationStats.from_dict({**doc, "version": 99})


@pytest.mark.parametrize("mode", ["mean_std", "min_max"])
def test_normalize_and_unnormalize_round_trip(episode_root: Path, mode: str) -> None:
    ds = MultiTaskDataset(episode_root, action_horizon=2)
    stats = ds.compute_stats(mode=mode)  # type: ignore[arg-type]
    raw = ds.__getitems__(list(range(len(ds))))
    norm = ds.normalizer(stats)(raw)
    fs = stats.fields["q_a"]
    if mode == "mean_std":
        np.testing.assert_allclose(norm[B.Q_A], (raw[B.Q_A] - fs.mean) / fs.std, rtol=1e-5)
        assert abs(float(norm[B.Q_A].mean())) < 0.2
    else:
        assert norm[B.Q_A].min() >= -1 - 1e-5 and norm[B.Q_A].max() <= 1 + 1e-5
    assert norm[B.Q_A].dtype == np.float32 and norm[B.GRIP_A] is raw[B.GRIP_A]  # grips untouched
    back = stats.unnormalize(B.ACTION_A, norm[B.ACTION_A])
    np.testing.assert_allclose(back, raw[B.ACTION_A], rtol=1e-5, atol=1e-3)


def test_normalize_refuses_missing_or_mismatched_stats(episode_root: Path) -> None:
    ds = MultiTaskDataset(episode_root)
    stats = ds.compute_stats(["q_a", "q_b"])
    with pytest.raises(SchemaError, match="no statistics for field"):
        Normalize(stats, ["q_a", "action_a"])
    with pytest.raises(SchemaError, match="no statistics for this field"):
        stats.unnormalize("action_a", np.zeros(7, np.float32))
    with pytest.raises(SchemaError, match="batch has no field"):
        Normalize(stats)({"q_a": np.zeros((1, 7), np.float32)})
    other = MultiTaskDataset(episode_root, tasks=["lift"])
    with pytest.raises(SchemaError, match="different selection"):
        other.normalizer(stats)
    cfg = DatasetConfig(roots=[str(episode_root)], tasks=["lift"], val_fraction=0.0)
    with pytest.raises(SchemaError, match="different selection"):
        MultiTaskDataset.from_config(cfg, stats=ds.compute_stats())


def test_from_config_applies_train_stats_to_both_splits(episode_root: Path) -> None:
    cfg = DatasetConfig(roots=[str(episode_root)], val_fraction=0.25, action_horizon=2)
    train = MultiTaskDataset.from_config(cfg, "train")
    val = MultiTaskDataset.from_config(cfg, "val")
    assert train.stats is not None and val.stats is not None and train.stats.key == val.stats.key
    b = val.__getitems__([0])
    raw = MultiTaskDataset(
        episode_root, split="val", val_fraction=0.25, action_horizon=2
    ).__getitems__([0])
    np.testing.assert_allclose(b[B.Q_A], train.stats.normalize("q_a", raw[B.Q_A]), rtol=1e-6)
    # A checkpoint's statistics (to_dict -> from_dict) are accepted for the same data.
    restored = NormalizationStats.from_dict(json.loads(json.dumps(train.stats.to_dict())))
    again = MultiTaskDataset.from_config(cfg, "train", stats=restored)
    np.testing.assert_allclose(again.__getitems__([1])[B.Q_A], train.__getitems__([1])[B.Q_A])


def test_unnormalize_accepts_torch_tensors(episode_root: Path) -> None:
    torch = pytest.importorskip("torch")
    stats = MultiTaskDataset(episode_root).compute_stats()
    x = np.linspace(-2, 2, 14, dtype=np.float32).reshape(2, 7)
    out = stats.unnormalize("q_a", torch.from_numpy(x))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), stats.unnormalize("q_a", x), rtol=1e-6)
    back = stats.normalize("q_a", out.double())
    assert back.dtype == torch.float64
    np.testing.assert_allclose(back.numpy(), x, rtol=1e-5, atol=1e-5)


def test_compute_stats_rejects_empty_input() -> None:
    with pytest.raises(SchemaError, match="no data"):
        compute_stats([], ["q_a"], key="k")
