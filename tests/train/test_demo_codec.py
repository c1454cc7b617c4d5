"""`teamvla demo --image-codec`: the demo's recorded data as image streams; reused data as stored."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("av")  # teamvla-schema[video]; the dev group has it

from teamvla_schema import EpisodeWriter, find_episodes, read_episode_meta
from teamvla_schema.cli import main
from teamvla_train.config import resolve_train_config
from teamvla_train.demo import demo_config, describe_storage


def _resolved(**kwargs):
    return resolve_train_config(
        demo_config(quick=True, overrides=["dataset.roots=[somewhere]"], **kwargs)
    )


def test_image_codec_flag_sets_the_demo_and_dagger_keys() -> None:
    default = _resolved()
    assert (default.eval.demo_image_codec, default.eval.demo_video_crf) == (None, 30)
    assert default.dagger.image_codec is None
    cfg = _resolved(image_codec="video", video_crf=22)
    assert (cfg.eval.demo_image_codec, cfg.eval.demo_video_crf) == ("video", 22)
    assert (cfg.dagger.image_codec, cfg.dagger.video_crf) == ("video", 22)
    assert _resolved(image_codec="none").eval.demo_image_codec is None
    # An explicit override still wins over the flag.
    explicit = resolve_train_config(
        demo_config(
            image_codec="video",
            overrides=["dataset.roots=[x]", "eval.demo_image_codec=lossless"],
        )
    )
    assert explicit.eval.demo_image_codec == "lossless"


def test_image_codec_flag_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--image-codec", "png", "--out", "unused"])
    assert "--image-codec" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--video-crf", "64", "--out", "unused"])


def _episode(writer: EpisodeWriter, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    writer.start_episode({"task": "lift"})
    for t in range(4):
        img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        writer.add_step({"rgb_a": img, "rgb_b": img, "q_a": np.zeros(7, np.float32),
                         "q_b": np.zeros(7, np.float32), "action_a": np.zeros(7, np.float32),
                         "action_b": np.zeros(7, np.float32), "grip_a": np.float32(0),
                         "grip_b": np.float32(0), "instruction": "lift", "task": "lift",
                         "success": t == 3})  # fmt: skip
    return writer.end_episode()


def test_describe_storage_reads_the_files(tmp_path: Path) -> None:
    plain = _episode(EpisodeWriter(tmp_path / "a"), 0)
    coded = _episode(EpisodeWriter(tmp_path / "b", image_codec="lossless"), 1)
    video = _episode(EpisodeWriter(tmp_path / "c", image_codec="video", video_crf=40), 2)
    assert describe_storage([plain]) == "plain arrays"
    assert describe_storage([coded, coded]) == "lossless"
    assert describe_storage([video]) == "video crf 40"
    assert describe_storage([coded, coded, plain]) == "2 lossless, 1 plain arrays"
    assert describe_storage([]) == "no episodes"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_quick_records_lossless_episodes_and_reuses_them_as_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "demo"
    argv = ["demo", "--quick", "--out", str(out), "--no-progress"]
    assert main([*argv, "--image-codec", "lossless"]) == 0
    assert "camera fields stored as lossless" in capsys.readouterr().out
    paths = find_episodes(out / "data")
    assert len(paths) == 9
    for p in paths:
        encodings = read_episode_meta(p).encodings
        assert set(encodings) == {"rgb_a", "rgb_b"}
        assert {e.codec for e in encodings.values()} == {"lossless"}
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["storage"] == "lossless" and results["data"]["recorded_now"]
    stamp = json.loads((out / "data" / "demo_data.json").read_text())
    assert stamp["image_codec"] == "lossless"

    # Asked for another codec, the demo reuses the data as stored, says so, and re-encodes nothing.
    before = {p: p.stat().st_mtime_ns for p in paths}
    with caplog.at_level(logging.WARNING, logger="teamvla_train.demo"):
        assert main([*argv, "--image-codec", "video"]) == 0
    assert "camera fields stored as lossless" in capsys.readouterr().out
    assert "not re-encoded" in caplog.text and "video crf 30" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in find_episodes(out / "data")} == before
    again = json.loads((out / "results.json").read_text())
    assert again["data"] == {**results["data"], "recorded_now": False}
