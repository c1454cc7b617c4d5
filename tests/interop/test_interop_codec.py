"""`teamvla convert --image-codec`: conversions into our format store cameras as image streams."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from interop_testlib import FIXTURES, same_episodes
from teamvla_data.interop import convert
from teamvla_schema import find_episodes, read_episode_meta, validate_episode_file
from teamvla_schema.cli import main

pytest.importorskip("av")  # teamvla-schema[video]; the dev group has it


def _codecs(root: Path) -> set[tuple[str, str]]:
    """``(field, codec)`` of every encoded field of every episode under ``root``."""
    out = set()
    for p in find_episodes(root):
        validate_episode_file(p)  # decodes and checks every stream
        out |= {(name, e.codec) for name, e in read_episode_meta(p).encodings.items()}
    return out


def test_lerobot_import_with_lossless_codec_is_bit_exact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("pyarrow")
    pytest.importorskip("PIL")
    src = FIXTURES / "lerobot_aloha_images"
    plain, coded = tmp_path / "plain", tmp_path / "coded"
    assert main(["convert", str(src), str(plain), "--no-progress"]) == 0
    capsys.readouterr()
    argv = ["convert", str(src), str(coded), "--image-codec", "lossless", "--no-progress"]
    assert main(argv) == 0
    assert "cameras: lossless image streams (bit-exact)" in capsys.readouterr().out
    assert _codecs(plain) == set()
    # The two schema cameras become streams; an extra uint8 camera (cam_high) stays an array.
    assert _codecs(coded) == {("rgb_a", "lossless"), ("rgb_b", "lossless")}
    same_episodes(plain, coded)  # metadata and every array, pixels included, bit for bit


def test_teamvla_round_trip_through_a_codec_gives_the_same_files(
    rich_root: Path, tmp_path: Path
) -> None:
    coded, back = tmp_path / "coded", tmp_path / "back"
    result = convert(rich_root, coded, image_codec="lossless")
    assert result.cameras == "lossless image streams (bit-exact)" and not result.psnr
    assert _codecs(coded) == {("rgb_a", "lossless"), ("rgb_b", "lossless")}
    same_episodes(rich_root, coded)
    convert(coded, back)  # default: plain arrays again
    original = [p.read_bytes() for p in find_episodes(rich_root)]
    assert [p.read_bytes() for p in find_episodes(back)] == original  # byte for byte


def test_video_codec_reports_the_psnr(plain_root: Path, tmp_path: Path) -> None:
    result = convert(plain_root, tmp_path / "video", image_codec="video", video_crf=20)
    assert result.cameras == "video image streams (AV1, crf 20; lossy)"
    assert set(result.psnr) == {"rgb_a", "rgb_b"}
    for low, mean in result.psnr.values():
        assert 20 < low <= mean
    for p in find_episodes(tmp_path / "video"):
        for enc in read_episode_meta(p).encodings.values():
            assert enc.codec == "video" and enc.params["crf"] == 20
            assert enc.psnr is not None and (math.isinf(enc.psnr) or enc.psnr > 20)
    assert "PSNR rgb_a: lowest" in result.summary()


def test_image_codec_is_refused_for_other_destinations(
    plain_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dst = tmp_path / "out.hdf5"
    argv = ["convert", str(plain_root), str(dst), "--to", "robomimic", "--image-codec", "video"]
    assert main([*argv, "--no-progress"]) == 2
    assert "--image-codec applies to conversions into teamvla format" in capsys.readouterr().err
    assert not dst.exists()
    with pytest.raises(SystemExit):
        main(["convert", str(plain_root), str(tmp_path / "x"), "--video-crf", "99"])
    with pytest.raises(ValueError, match="image_codec"):
        convert(plain_root, tmp_path / "y", image_codec="png")
    assert not (tmp_path / "y").exists()
