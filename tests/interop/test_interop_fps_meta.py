"""The optional `fps` of the episode metadata (teamvla_schema.meta)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from teamvla_schema import (
    EpisodeMeta,
    EpisodeWriter,
    SchemaError,
    read_episode_meta,
    validate_episode_meta,
)
from teamvla_schema.episode import write_episode_arrays


def _step() -> dict:
    z = np.zeros(2, np.float32)
    img = np.zeros((4, 4, 3), np.uint8)
    return {"rgb_a": img, "rgb_b": img, "q_a": z, "q_b": z, "action_a": z, "action_b": z,
            "grip_a": np.float32(0), "grip_b": np.float32(0), "instruction": "x", "task": "lift",
            "success": True}  # fmt: skip


def test_fps_is_optional_validated_and_absent_when_unknown() -> None:
    assert validate_episode_meta({"task": "lift", "episode_id": "a"}).fps is None
    assert validate_episode_meta({"task": "lift", "episode_id": "a", "fps": 30}).fps == 30.0
    assert "fps" not in EpisodeMeta("lift", "a").to_dict()  # old files stay byte-identical
    assert EpisodeMeta("lift", "a", fps=12.5).to_dict()["fps"] == 12.5
    for bad in (0, -1, math.inf, math.nan, True, "30"):
        with pytest.raises(SchemaError) as exc:
            validate_episode_meta({"task": "lift", "episode_id": "a", "fps": bad})
        assert exc.value.field == "fps"


def test_fps_is_written_and_read_back(tmp_path: Path) -> None:
    with EpisodeWriter(tmp_path / "old") as w:  # a file as written before fps existed
        w.start_episode({"task": "lift"})
        w.add_step(_step())
        old = w.end_episode()
    header = read_episode_meta(old)
    assert header.meta.fps is None
    arrays = {k: np.asarray(v)[None] for k, v in _step().items()}
    arrays["instruction"] = np.array(["x"])
    arrays["task"] = np.array(["lift"])
    meta = EpisodeMeta("lift", "b", True, 1, fps=20.0)
    path = write_episode_arrays(tmp_path / "new" / "lift" / "b.npz", meta, arrays)
    assert read_episode_meta(path).meta.fps == 20.0
    doc = json.loads(np.load(path, allow_pickle=False)["__meta__"].tobytes())
    assert doc["fps"] == 20.0


def test_episode_writer_keeps_fps(tmp_path: Path) -> None:
    with EpisodeWriter(tmp_path) as w:
        w.start_episode({"task": "lift", "fps": 30})
        w.add_step(_step())
        path = w.end_episode()
    assert read_episode_meta(path).meta.fps == 30.0
