"""Import of datasets written by the real libraries (tests/fixtures/interop, see
scripts/make_interop_fixtures.py): every number exact, images exact or by PSNR."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from interop_testlib import FIXTURES
from teamvla_data.interop import convert
from teamvla_data.interop.media import psnr
from teamvla_schema import find_episodes, read_episode, validate_episode_file

pytest.importorskip("pyarrow")  # teamvla-data[lerobot]; the dev group has it
pytest.importorskip("PIL")


def _episodes(root: Path) -> list:
    paths = find_episodes(root)
    for p in paths:
        validate_episode_file(p)
    return [read_episode(p) for p in paths]


@pytest.mark.parametrize("name", ["lerobot_aloha_images", "lerobot_aloha_video"])
def test_lerobot_fixture_imports_with_the_aloha_split(
    name: str, fixture_script, tmp_path: Path
) -> None:
    if name.endswith("video"):
        pytest.importorskip("av")
    result = convert(FIXTURES / name, tmp_path / "out")
    assert (result.src_format, result.episodes, result.steps) == ("lerobot", 2, 10)
    expected = fixture_script.fixture_episodes()
    got = _episodes(tmp_path / "out")
    assert [e.meta.episode_id for e in got] == ["episode_000000", "episode_000001"]
    for ep, want in zip(got, expected, strict=True):
        a = ep.arrays
        assert ep.meta.task == name and ep.meta.fps == 10.0
        state, action = want["state"], want["action"]
        np.testing.assert_array_equal(a["q_a"], state[:, 0:6])
        np.testing.assert_array_equal(a["grip_state_a"], state[:, 6])
        np.testing.assert_array_equal(a["q_b"], state[:, 7:13])
        np.testing.assert_array_equal(a["grip_state_b"], state[:, 13])
        np.testing.assert_array_equal(a["action_a"], action[:, 0:6])
        np.testing.assert_array_equal(a["grip_a"], action[:, 6])
        np.testing.assert_array_equal(a["action_b"], action[:, 7:13])
        np.testing.assert_array_equal(a["grip_b"], action[:, 13])
        np.testing.assert_array_equal(a["effort"], want["effort"])
        np.testing.assert_array_equal(a["reward"], want["reward"])
        np.testing.assert_array_equal(a["done"], want["done"])
        assert set(a["instruction"]) == {want["task"]}
        assert not a["success"].any() and "timestamp" not in a  # no success column; t = frame/fps
        cams = want["cameras"]
        for ours, theirs in (
            ("rgb_a", "cam_left_wrist"),
            ("rgb_b", "cam_right_wrist"),
            ("cam_high", "cam_high"),
        ):
            if name.endswith("images"):
                np.testing.assert_array_equal(a[ours], cams[theirs], err_msg=ours)
            else:  # LeRobot's H.264 at crf 30: lossy; each frame must match its own time best
                assert a[ours].shape == cams[theirs].shape and psnr(a[ours], cams[theirs]) > 20, (
                    ours
                )
                for t in range(len(a[ours])):
                    scores = [psnr(a[ours][t], c) for c in cams[theirs]]
                    assert int(np.argmax(scores)) == t, (ours, t, scores)
        keys = ep.meta.user["interop"]["lerobot"]["keys"]
        assert (
            keys["effort"] == "observation.effort"
            and keys["cam_high"] == "observation.images.cam_high"
        )
        assert ep.meta.user["interop"]["lerobot"]["robot_type"] == "aloha"
    notes = "\n".join(result.notes)
    assert "observation.effort: no TeamVLA counterpart, kept as extra field 'effort'" in notes
    assert "no next.success column" in notes


def test_success_last_marks_each_last_step(tmp_path: Path) -> None:
    convert(FIXTURES / "lerobot_aloha_images", tmp_path / "out", success="last", task="insertion")
    for ep in _episodes(tmp_path / "out"):
        assert ep.meta.task == "insertion" and ep.meta.success
        assert ep.arrays["success"].tolist() == [False] * (len(ep) - 1) + [True]


def test_robomimic_fixture_imports(fixture_script, tmp_path: Path) -> None:
    pytest.importorskip("h5py")
    result = convert(FIXTURES / "robomimic_twoarm.hdf5", tmp_path / "out")
    assert (result.src_format, result.episodes, result.steps) == ("robomimic", 2, 10)
    got = _episodes(tmp_path / "out")
    for e, (ep, want) in enumerate(zip(got, fixture_script.fixture_episodes(), strict=True)):
        a, meta = ep.arrays, ep.meta
        assert (meta.task, meta.episode_id, meta.fps) == ("twoarmlift", f"demo_{e}", 20.0)
        np.testing.assert_array_equal(a["rgb_a"], want["cameras"]["cam_left_wrist"])
        np.testing.assert_array_equal(a["rgb_b"], want["cameras"]["cam_right_wrist"])
        np.testing.assert_array_equal(a["q_a"], want["joint64"][0].astype(np.float32))
        np.testing.assert_array_equal(a["q_b"], want["joint64"][1].astype(np.float32))
        act = want["actions64"].astype(np.float32)
        np.testing.assert_array_equal(a["action_a"], act[:, 0:7])
        np.testing.assert_array_equal(a["grip_a"], act[:, 7])
        np.testing.assert_array_equal(a["action_b"], act[:, 8:15])
        np.testing.assert_array_equal(a["grip_b"], act[:, 15])
        np.testing.assert_array_equal(a["states"], want["states64"])  # float64 kept exactly
        np.testing.assert_array_equal(a["robot0_eef_pos"], want["eef64"])
        np.testing.assert_array_equal(a["reward"], want["reward"])
        assert a["done"].dtype == np.bool_ and a["done"].tolist() == want["done"].tolist()
        assert a["success"].tolist() == (want["reward"] > 0).tolist() and meta.success
        assert set(a["instruction"]) == {"TwoArmLift"}
        rm = meta.user["interop"]["robomimic"]
        assert rm["masks"] == (["train"] if e == 0 else ["valid"])
        assert rm["model_file"] == f"<mujoco model='fixture{e}'/>"
        assert rm["env_args"]["env_kwargs"]["control_freq"] == 20
    notes = "\n".join(result.notes)
    assert "next_obs not imported" in notes
    assert "action_a: float64 rounded to float32 (the schema's dtype), largest change" in notes


def test_robomimic_file_comes_back_with_its_structure(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    convert(FIXTURES / "robomimic_twoarm.hdf5", tmp_path / "ours", instruction="lift it together")
    convert(tmp_path / "ours", tmp_path / "again.hdf5", dst_format="robomimic")
    with (
        h5py.File(FIXTURES / "robomimic_twoarm.hdf5", "r") as a,
        h5py.File(tmp_path / "again.hdf5", "r") as b,
    ):
        assert sorted(a["data"]) == sorted(b["data"]) and sorted(a["mask"]) == sorted(b["mask"])
        assert json.loads(a["data"].attrs["env_args"]) == json.loads(b["data"].attrs["env_args"])
        assert list(b["mask/train"][()]) == [b"demo_0"]
        for demo in a["data"]:
            ga, gb = a["data"][demo], b["data"][demo]
            assert ga.attrs["model_file"] == gb.attrs["model_file"]
            for key in (
                "obs/robot0_eye_in_hand_image",
                "obs/robot0_eef_pos",
                "states",
                "rewards",
                "dones",
            ):
                np.testing.assert_array_equal(ga[key][()], gb[key][()], err_msg=key)
            np.testing.assert_array_equal(ga["actions"][()].astype(np.float32), gb["actions"][()])
            assert set(gb["teamvla/instruction"][()]) == {b"lift it together"}
