"""The checked-in fixtures: valid, loadable without torch, and reproducible by scripts/make_fixtures.py."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from schema_testlib import REPO_ROOT
from teamvla_schema import load_checkpoint, read_episode, validate_episode_file

FIXTURES = REPO_ROOT / "tests" / "fixtures"
EPISODE = FIXTURES / "data" / "lift_sample.npz"
CHECKPOINT = FIXTURES / "checkpoints" / "bc_stub.ckpt"
SCRIPT = REPO_ROOT / "scripts" / "make_fixtures.py"


def test_script_regenerates_identical_bytes(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for checked_in in (EPISODE, CHECKPOINT):
        regenerated = tmp_path / checked_in.relative_to(FIXTURES)
        assert regenerated.read_bytes() == checked_in.read_bytes(), (
            f"{checked_in.relative_to(REPO_ROOT)} is stale: run `python scripts/make_fixtures.py`"
        )


def test_fixtures_load_with_torch_blocked() -> None:
    code = f"""
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
from teamvla_schema import load_checkpoint, read_episode, validate_episode_file
header = validate_episode_file({str(EPISODE)!r})
ep = read_episode({str(EPISODE)!r})
ckpt = load_checkpoint({str(CHECKPOINT)!r})
assert header.meta.num_steps == 4 and ep.arrays["rgb_a"].shape == (4, 32, 32, 3)
assert set(ckpt) >= {{"model", "optimizer", "scheduler", "training_state", "config", "stats"}}
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_episode_fixture_content() -> None:
    header = validate_episode_file(EPISODE)
    assert header.meta.task == "lift" and header.meta.num_steps == 4 and header.meta.success
    ep = read_episode(EPISODE)
    assert ep.arrays["rgb_a"].shape == (4, 32, 32, 3) and ep.arrays["q_a"].shape == (4, 7)
    assert set(ep.arrays["instruction"]) == {"lift the red block"}
    assert ep.arrays["phase"].tolist() == ["approach", "grasp", "lift", "hold"]
    # smooth content, not noise: neighbouring pixels are close almost everywhere
    img = ep.arrays["rgb_a"][0].astype(np.int32)
    assert np.median(np.abs(np.diff(img, axis=1))) <= 4
    assert img.std() > 10  # and not blank either


def test_checkpoint_fixture_content() -> None:
    ckpt = load_checkpoint(CHECKPOINT)
    assert ckpt["model"]["encoder.conv1.weight"].shape == (8, 3, 3, 3)
    state = ckpt["optimizer"]["state"]
    assert all(isinstance(k, int) for k in state) and set(state[0]) == {
        "step",
        "exp_avg",
        "exp_avg_sq",
    }
    assert ckpt["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    ts = ckpt["training_state"]
    assert (ts["epoch"], ts["step"]) == (3, 120)
    rng = np.random.default_rng()
    rng.bit_generator.state = ts["rng"]["numpy"]  # a usable numpy RNG state
    assert ckpt["config"]["model"]["name"] == "single_brain"
    assert ckpt["stats"]["fields"]["q_a"]["count"] == 400


def _same(got: Any, want: Any, where: str = "") -> None:
    """Deep equality: arrays with dtype, shape and bytes; NaN-aware floats; exact container types."""
    if isinstance(want, np.ndarray | np.generic):
        want = np.asarray(want)
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype, where
        assert got.shape == want.shape and got.tobytes() == want.tobytes(), where
    elif isinstance(want, dict):
        assert type(got) is dict and list(got) == list(want), where
        for k in want:
            _same(got[k], want[k], f"{where}/{k}")
    elif isinstance(want, list | tuple):
        assert type(got) is type(want) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _same(g, w, f"{where}/{i}")
    elif isinstance(want, float) and math.isnan(want):
        assert isinstance(got, float) and math.isnan(got), where
    else:
        assert type(got) is type(want) and got == want, (where, got, want)


def test_checkpoint_fixture_loads_exactly_what_the_script_saved() -> None:
    """The checked-in file, written by the writer before tensors were read through the
    safetensors package (its bytes are unchanged, see above), loads to the very values
    the script passed to ``save_checkpoint``."""
    spec = importlib.util.spec_from_file_location("make_fixtures", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    ckpt = load_checkpoint(CHECKPOINT)
    assert ckpt.pop("format_version") == 1
    _same(ckpt, script.checkpoint_sections())
