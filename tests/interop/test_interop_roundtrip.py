"""Round trips through LeRobot and robomimic come back exactly (images: exactly, or PSNR for video)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from interop_testlib import same_episodes
from teamvla_data.interop import convert
from teamvla_data.interop.media import decode_all, psnr, video_encoder_available
from teamvla_schema import find_episodes, read_episode, read_episode_meta

pytest.importorskip("pyarrow")  # teamvla-data[lerobot]; the dev group has it
pytest.importorskip("PIL")


def _byte_identical(a: Path, b: Path) -> None:
    pa, pb = find_episodes(a), find_episodes(b)
    assert len(pa) == len(pb) > 0
    for x, y in zip(pa, pb, strict=True):
        assert x.relative_to(a) == y.relative_to(b)
        assert x.read_bytes() == y.read_bytes(), x


def test_lerobot_png_round_trip_is_byte_identical(rich_root: Path, tmp_path: Path) -> None:
    out = convert(rich_root, tmp_path / "lr", dst_format="lerobot", fps=10, cameras="png")
    assert out.episodes == 4 and out.steps == 24
    assert "PNG" in (out.cameras or "") and not out.psnr
    info = json.loads((tmp_path / "lr" / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10
    assert info["features"]["observation.images.rgb_a"]["dtype"] == "image"
    assert info["features"]["action"]["shape"] == [10]  # ALOHA layout: 4 + 1 + 4 + 1
    assert info["features"]["observation.state"]["names"][:5] == [
        "q_a.0",
        "q_a.1",
        "q_a.2",
        "q_a.3",
        "q_b.0",
    ]
    assert info["total_episodes"] == 4 and info["total_frames"] == 24 and info["total_tasks"] == 2
    back = convert(tmp_path / "lr", tmp_path / "back")
    assert back.src_format == "lerobot" and back.episodes == 4
    same_episodes(rich_root, tmp_path / "back")
    _byte_identical(rich_root, tmp_path / "back")


def test_robomimic_round_trip_is_byte_identical(rich_root: Path, tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    out = convert(rich_root, tmp_path / "demos.hdf5", dst_format="robomimic")
    assert out.episodes == 4
    with h5py.File(tmp_path / "demos.hdf5", "r") as f:
        assert sorted(f["data"]) == ["demo_0", "demo_1", "demo_2", "demo_3"]
        assert f["data"].attrs["total"] == 24
        g = f["data/demo_0"]
        assert g.attrs["num_samples"] == 6
        assert g["actions"].shape == (6, 10) and g["obs/camera_a_image"].shape == (6, 16, 16, 3)
        ep = read_episode(find_episodes(rich_root)[0])
        np.testing.assert_array_equal(g["obs/robot0_joint_pos"][()], ep.arrays["q_a"])
        np.testing.assert_array_equal(g["actions"][:, 4], ep.arrays["grip_a"])
        np.testing.assert_array_equal(g["rewards"][()], ep.arrays["reward"])
        np.testing.assert_array_equal(g["dones"][()], ep.arrays["done"].astype(np.int64))
    convert(tmp_path / "demos.hdf5", tmp_path / "back")
    same_episodes(rich_root, tmp_path / "back")
    _byte_identical(rich_root, tmp_path / "back")


@pytest.mark.skipif(
    not video_encoder_available(), reason="PyAV with an H.264 encoder is not installed"
)
def test_lerobot_video_round_trip_reports_psnr(plain_root: Path, tmp_path: Path) -> None:
    out = convert(
        plain_root, tmp_path / "lr", dst_format="lerobot", fps=10, cameras="video", crf=18
    )
    assert "video" in (out.cameras or "")
    assert set(out.psnr) == {"rgb_a", "rgb_b"}
    info = json.loads((tmp_path / "lr" / "meta" / "info.json").read_text())
    assert info["features"]["observation.images.rgb_b"]["dtype"] == "video"
    assert info["features"]["observation.images.rgb_b"]["info"]["video.codec"] == "h264"
    mp4 = tmp_path / "lr" / "videos" / "observation.images.rgb_a" / "chunk-000" / "file-000.mp4"
    first = read_episode(find_episodes(plain_root)[0])
    measured = psnr(decode_all(mp4), first.arrays["rgb_a"])
    low, mean = out.psnr["rgb_a"]
    assert low <= measured and 30.0 < low <= mean < 99
    convert(tmp_path / "lr", tmp_path / "back")
    for a, b in zip(find_episodes(plain_root), find_episodes(tmp_path / "back"), strict=True):
        ea, eb = read_episode(a), read_episode(b)
        assert ea.meta == eb.meta
        for name, arr in ea.arrays.items():
            if name.startswith("rgb_"):
                assert not np.array_equal(arr, eb.arrays[name])  # lossy ...
                assert psnr(eb.arrays[name], arr) >= low - 1e-6  # ... by what was reported
            else:
                np.testing.assert_array_equal(arr, eb.arrays[name], err_msg=name)


@pytest.mark.skipif(
    not video_encoder_available(), reason="PyAV with an H.264 encoder is not installed"
)
def test_lossless_video_round_trip_is_byte_identical(rich_root: Path, tmp_path: Path) -> None:
    out = convert(
        rich_root, tmp_path / "lr", dst_format="lerobot", fps=10, cameras="video-lossless"
    )
    assert "lossless" in (out.cameras or "") and not out.psnr
    info = json.loads((tmp_path / "lr" / "meta" / "info.json").read_text())
    assert info["features"]["observation.images.rgb_a"]["info"]["video.pix_fmt"] == "gbrp"
    convert(tmp_path / "lr", tmp_path / "back")
    _byte_identical(rich_root, tmp_path / "back")


def test_fps_survives_every_format(plain_root: Path, tmp_path: Path) -> None:
    convert(plain_root, tmp_path / "fps", fps=15)
    assert {read_episode_meta(p).meta.fps for p in find_episodes(tmp_path / "fps")} == {15.0}
    convert(
        tmp_path / "fps", tmp_path / "lr", dst_format="lerobot", cameras="png"
    )  # fps from the episodes
    assert json.loads((tmp_path / "lr" / "meta" / "info.json").read_text())["fps"] == 15
    convert(tmp_path / "lr", tmp_path / "back1")
    convert(tmp_path / "fps", tmp_path / "rm.hdf5", dst_format="robomimic")
    convert(tmp_path / "rm.hdf5", tmp_path / "back2")
    _byte_identical(tmp_path / "fps", tmp_path / "back1")
    _byte_identical(tmp_path / "fps", tmp_path / "back2")
    # the originals had no fps: it stays absent (old files unchanged), it is not invented
    assert {read_episode_meta(p).meta.fps for p in find_episodes(plain_root)} == {None}


def test_lerobot_import_export_keeps_the_original_keys(fixture_script, tmp_path: Path) -> None:
    from interop_testlib import FIXTURES

    convert(FIXTURES / "lerobot_aloha_images", tmp_path / "ours")
    convert(tmp_path / "ours", tmp_path / "lr", dst_format="lerobot", cameras="png")
    src = json.loads((FIXTURES / "lerobot_aloha_images" / "meta" / "info.json").read_text())
    out = json.loads((tmp_path / "lr" / "meta" / "info.json").read_text())
    for key in ("observation.images.cam_left_wrist", "observation.images.cam_high", "observation.effort",
                "observation.state", "action", "next.reward", "next.done"):  # fmt: skip
        assert key in out["features"], key
        assert out["features"][key]["shape"] == src["features"][key]["shape"], key
    assert out["features"]["action"]["names"] == src["features"]["action"]["names"]
    assert out["robot_type"] == "aloha" and out["fps"] == src["fps"]
    convert(tmp_path / "lr", tmp_path / "again")
    same_episodes(tmp_path / "ours", tmp_path / "again")
