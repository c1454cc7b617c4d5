"""The resolved config survives run directories and checkpoints losslessly."""

# teamvla_schema.config.field is a dataclass field factory (ruff cannot tell without
# lint.flake8-bugbear.extend-immutable-calls in the root pyproject).

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from teamvla_schema.checkpoint import load_checkpoint, save_checkpoint
from teamvla_schema.config import (
    ConfigError,
    LoadedConfig,
    config_from_checkpoint,
    field,
    from_dict,
    load_config,
    resolved_data,
    save_resolved_config,
    to_dict,
    validate_config,
)
from teamvla_schema.run_config import RunConfig


@dataclass
class Awkward:
    """Values that are easy to lose on the way: tuples, None, inf, look-alike strings, nested dicts."""

    pair: tuple[float, float] = field(default=(0.9, 0.999), doc="")
    maybe: int | None = field(default=None, doc="")
    limit: float = field(default=math.inf, doc="")
    tiny: float = field(default=3e-4, doc="")
    name: str = field(default="3e-4", doc="a string that looks like a float")
    flag: str = field(default="yes", doc="a string that YAML 1.1 would read as a bool")
    weights: dict[str, float] = field(default_factory=lambda: {"lift": 1.0, "__x": 2.0}, doc="")
    words: list[str] = field(default_factory=lambda: ["", "null", "multi\nline", "ünïcode"], doc="")


SECTIONS = {"run": RunConfig, "awkward": Awkward}


@pytest.fixture
def loaded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "common.yaml").write_text("run:\n  seed: 3\n  device: cuda:1\n")
    (tmp_path / "exp.yaml").write_text(
        "extends: common.yaml\nawkward:\n  pair: [0.5, 0.25]\n  maybe: 7\n"
    )
    return load_config("exp.yaml", ["awkward.tiny=1e-12", "run.log_level=DEBUG"])


def test_checkpoint_round_trip_is_lossless(tmp_path, loaded):
    typed = validate_config(loaded, sections=SECTIONS)
    full = resolved_data(loaded, typed)
    ckpt = save_checkpoint(
        tmp_path / "c.safetensors", model={"w": np.zeros(2, np.float32)}, config=full
    )
    back = load_checkpoint(ckpt)["config"]
    assert back == full
    for name, cls in SECTIONS.items():
        assert from_dict(cls, back[name], key=name) == typed[name]
    assert typed["awkward"].pair == (0.5, 0.25) and typed["awkward"].tiny == 1e-12


def test_config_from_checkpoint_reads_the_header_only(tmp_path, loaded):
    typed = validate_config(loaded, sections=SECTIONS)
    ckpt = save_checkpoint(
        tmp_path / "c.safetensors",
        model={"w": np.ones(4, np.float32)},
        config=resolved_data(loaded, typed),
    )
    again = config_from_checkpoint(ckpt)
    assert again.files == [str(ckpt)]
    assert validate_config(again, sections=SECTIONS) == typed


def test_config_from_checkpoint_without_config(tmp_path):
    ckpt = save_checkpoint(tmp_path / "c.safetensors", model={"w": np.ones(1, np.float32)})
    with pytest.raises(ConfigError, match="checkpoint holds no config"):
        config_from_checkpoint(ckpt)


def test_errors_in_a_checkpoint_config_name_the_checkpoint(tmp_path):
    ckpt = save_checkpoint(tmp_path / "c.safetensors", model={}, config={"run": {"seed": -1}})
    with pytest.raises(ConfigError) as info:
        validate_config(config_from_checkpoint(ckpt), sections=SECTIONS)
    assert str(info.value) == f"{ckpt}: run.seed: expected a value >= 0, received -1"


def test_save_resolved_config_round_trips_through_load_config(tmp_path, loaded):
    typed = validate_config(loaded, sections=SECTIONS)
    out = save_resolved_config(tmp_path / "run" / "config.yaml", resolved_data(loaded, typed))
    assert out == tmp_path / "run" / "config.yaml"
    again = load_config(out)
    assert again.data == resolved_data(loaded, typed)
    assert validate_config(again, sections=SECTIONS) == typed
    assert [p.name for p in out.parent.iterdir()] == [
        "config.yaml"
    ]  # no temporary file left behind


def test_save_resolved_config_accepts_loaded_and_typed(tmp_path, loaded):
    path = save_resolved_config(tmp_path / "a.yaml", loaded)
    text = path.read_text()
    assert text.startswith("# Resolved TeamVLA config")
    assert "# Built from: common.yaml, exp.yaml" in text
    assert "# Overrides: awkward.tiny=1e-12 run.log_level=DEBUG" in text
    assert load_config(path).data == loaded.data
    typed = validate_config(loaded, sections=SECTIONS)
    path = save_resolved_config(tmp_path / "b.yaml", typed)
    assert load_config(path).data == to_dict(typed)


def test_save_resolved_config_replaces_atomically(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("old: 1\n")
    save_resolved_config(path, {"new": 2})
    assert load_config(path).data == {"new": 2}


def test_from_mapping_wraps_plain_data():
    loaded = LoadedConfig.from_mapping({"run": {"seed": 2}}, source="somewhere")
    assert validate_config(loaded, sections=SECTIONS) == {"run": RunConfig(seed=2)}
