"""The dataset: config section: DatasetConfig validation and configs/train_bc.yaml."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from teamvla_data.config import AugmentConfig, DatasetConfig, as_dataset_config
from teamvla_schema.config import ConfigError, from_dict, load_config, to_dict

REPO = Path(__file__).resolve().parents[2]
TRAIN_BC = REPO / "configs" / "train_bc.yaml"


def test_train_bc_dataset_section_validates() -> None:
    loaded = load_config(TRAIN_BC)
    cfg = DatasetConfig.from_loaded(loaded)
    assert cfg.roots and cfg.batch_size >= 1 and isinstance(cfg.augment, AugmentConfig)
    assert as_dataset_config(loaded) == cfg
    assert as_dataset_config(to_dict(cfg)) == cfg  # a checkpoint's dict form round-trips


def _dataset_block(text: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index("dataset:")
    block = []
    for line in lines[start + 1 :]:
        if line and not line.startswith((" ", "#")):
            break
        block.append(line)
    return block


def test_every_dataset_key_is_in_train_bc_with_a_comment_above() -> None:
    block = _dataset_block(TRAIN_BC.read_text())
    keys = {}
    for i, line in enumerate(block):
        m = re.match(r"^( +)([a-z_]+):", line)
        if m:
            keys[(len(m.group(1)), m.group(2))] = block[i - 1].strip()
    documented = {name for (_, name) in keys}
    for f in dataclasses.fields(DatasetConfig):
        assert f.name in documented, f"dataset.{f.name} missing from {TRAIN_BC.name}"
    for f in dataclasses.fields(AugmentConfig):
        assert (4, f.name) in keys, f"dataset.augment.{f.name} missing"
    for (_, name), above in keys.items():
        assert above.startswith("#"), f"dataset key {name!r} has no comment above it"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"roots": ["x"], "batch_sise": 8}, "did you mean 'dataset.batch_size'"),
        ({"roots": []}, "at least one episode root"),
        ({"roots": ["x"], "val_fraction": 1.0}, "< 1.0"),
        ({"roots": ["x"], "obs_history": -1}, ">= 0"),
        ({"roots": ["x"], "task_weighting": "explicit"}, "task_weights: required"),
        (
            {"roots": ["x"], "task_weights": {"lift": 1.0}},
            "only used with task_weighting 'explicit'",
        ),
        ({"roots": ["x"], "task_weighting": "uniform", "shuffle": False}, "needs shuffle"),
        ({"roots": ["x"], "stats_fields": ["rgb_a"]}, "unknown field"),
        ({"roots": ["x"], "image_size": [96]}, "image_size"),
        ({"roots": ["x"], "persistent_workers": True}, "num_workers > 0"),
        ({"roots": ["x"], "on_error": "ignore"}, "expected one of"),
        ({"roots": ["x"], "augment": {"color_jitter": 2.0}}, "dataset.augment.color_jitter"),
        ({"roots": ["x"], "cache_max_bytes": -1}, ">= 0"),
        ({"roots": ["x"], "shuffle": "random"}, "dataset.shuffle"),
    ],
)
def test_bad_sections_are_refused_with_the_key(section: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_dict(DatasetConfig, section, key="dataset")


def test_shuffle_and_cache_budget_values() -> None:
    for value in (True, False, "uniform"):
        assert from_dict(DatasetConfig, {"roots": ["x"], "shuffle": value}).shuffle == value
    cfg = from_dict(DatasetConfig, {"roots": ["x"], "cache_max_bytes": 1 << 30})
    assert cfg.cache_max_bytes == 1 << 30 and DatasetConfig(roots=["x"]).cache_max_bytes is None
    with pytest.raises(ConfigError, match="needs shuffle"):
        from_dict(DatasetConfig, {"roots": ["x"], "shuffle": False, "task_weighting": "uniform"})
    # Weighted sampling with a plain uniform shuffle is fine.
    from_dict(DatasetConfig, {"roots": ["x"], "shuffle": "uniform", "task_weighting": "uniform"})


def test_as_dataset_config_rejects_other_types() -> None:
    with pytest.raises(TypeError):
        as_dataset_config(42)
