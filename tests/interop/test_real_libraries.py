"""The converters against the real LeRobot and robomimic (run by `uvx nox -s interop`).

Skipped in the default run, where those libraries are not installed; the nox
session sets TEAMVLA_INTEROP_REAL=1, which turns a missing library into a
failure. LeRobot decodes video with its "pyav" backend (torchcodec needs a
system FFmpeg).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from interop_testlib import write_episodes
from teamvla_data.interop import convert
from teamvla_data.interop.media import decode_all, psnr
from teamvla_schema import find_episodes, read_episode

if os.environ.get("TEAMVLA_INTEROP_REAL"):
    import lerobot  # noqa: F401
    import robomimic  # noqa: F401
else:
    pytest.importorskip("lerobot")
    pytest.importorskip("robomimic")

BACKEND = "pyav"


def _lerobot(root: Path):  # -> LeRobotDataset
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset("teamvla/check", root=root, video_backend=BACKEND)


def _uint8(img) -> np.ndarray:
    return (img.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)


@pytest.mark.parametrize("video", [False, True], ids=["png", "video"])
def test_a_dataset_recorded_by_lerobot_imports(video: bool, fixture_script, tmp_path: Path) -> None:
    root = tmp_path / "recorded"
    fixture_script.record_lerobot(root, video=video)
    convert(root, tmp_path / "ours")
    ds = _lerobot(root)
    ours = [read_episode(p) for p in find_episodes(tmp_path / "ours")]
    i = 0
    for ep, want in zip(ours, fixture_script.fixture_episodes(), strict=True):
        a = ep.arrays
        for t in range(len(ep)):
            item = ds[i]
            i += 1
            state, action = item["observation.state"].numpy(), item["action"].numpy()
            np.testing.assert_array_equal(
                np.r_[a["q_a"][t], a["grip_state_a"][t], a["q_b"][t], a["grip_state_b"][t]], state
            )
            np.testing.assert_array_equal(
                np.r_[a["action_a"][t], a["grip_a"][t], a["action_b"][t], a["grip_b"][t]], action
            )
            np.testing.assert_array_equal(a["effort"][t], item["observation.effort"].numpy())
            assert a["instruction"][t] == item["task"] == want["task"]
            for ours_key, key in (
                ("rgb_a", "cam_left_wrist"),
                ("rgb_b", "cam_right_wrist"),
                ("cam_high", "cam_high"),
            ):
                theirs = _uint8(item[f"observation.images.{key}"])
                # the same decoded pixels LeRobot gives its users (video: same decoder, same frame)
                np.testing.assert_array_equal(a[ours_key][t], theirs, err_msg=f"{ours_key} t={t}")
                if not video:
                    np.testing.assert_array_equal(a[ours_key][t], want["cameras"][key][t])
    assert i == len(ds)


@pytest.mark.parametrize("cameras", ["png", "video", "video-lossless"])
def test_lerobot_dataset_loads_our_export(cameras: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_episodes(src, extras=True, size=16)
    result = convert(src, tmp_path / "lr", dst_format="lerobot", fps=10, cameras=cameras)
    ds = _lerobot(tmp_path / "lr")
    assert ds.fps == 10 and ds.num_episodes == 4 and len(ds) == 24
    i = 0
    for path in find_episodes(src):
        ep = read_episode(path)
        a = ep.arrays
        seen: dict[str, list[np.ndarray]] = {"rgb_a": [], "rgb_b": []}
        for t in range(len(ep)):
            item = ds[i]
            i += 1
            np.testing.assert_array_equal(
                item["action"].numpy(),
                np.r_[a["action_a"][t], a["grip_a"][t], a["action_b"][t], a["grip_b"][t]],
            )
            np.testing.assert_array_equal(
                item["observation.state"].numpy(), np.r_[a["q_a"][t], a["q_b"][t]]
            )
            np.testing.assert_array_equal(item["depth_a"].numpy(), a["depth_a"][t])
            assert (
                bool(item["next.success"]) == bool(a["success"][t])
                and item["task"] == a["instruction"][t]
            )
            assert (
                float(item["next.reward"]) == float(a["reward"][t])
                and item["phase"] == a["phase"][t]
            )
            for cam in ("rgb_a", "rgb_b"):
                theirs = _uint8(item[f"observation.images.{cam}"])
                if cameras != "video":  # PNG and lossless video: LeRobot sees our exact pixels
                    np.testing.assert_array_equal(theirs, a[cam][t])
                seen[cam].append(theirs)
        for cam, frames in seen.items() if cameras == "video" else ():
            # the episode's PSNR through LeRobot is at least the lowest we reported
            assert psnr(np.stack(frames), a[cam]) >= result.psnr[cam][0] - 1e-9
    if cameras == "video":  # LeRobot's decoder and ours agree on every pixel
        mp4 = tmp_path / "lr" / "videos" / "observation.images.rgb_b" / "chunk-000" / "file-003.mp4"
        last = ds.meta.episodes[3]
        frames = decode_all(mp4)
        start = last["dataset_from_index"]
        for t in range(len(frames)):
            np.testing.assert_array_equal(
                _uint8(ds[start + t]["observation.images.rgb_b"]), frames[t]
            )


def test_robomimic_sequence_dataset_loads_our_export(tmp_path: Path) -> None:
    import robomimic.utils.obs_utils as obs_utils
    from robomimic.utils.dataset import SequenceDataset

    src = tmp_path / "src"
    write_episodes(src, extras=True)
    convert(src, tmp_path / "demos.hdf5", dst_format="robomimic")
    keys = ["robot0_joint_pos", "robot1_joint_pos", "camera_a_image", "camera_b_image", "depth_a"]
    obs_utils.initialize_obs_utils_with_obs_specs(
        {"obs": {"low_dim": [keys[0], keys[1], keys[4]], "rgb": keys[2:4]}}
    )
    ds = SequenceDataset(str(tmp_path / "demos.hdf5"), obs_keys=keys, dataset_keys=["actions", "rewards", "dones"],
                         load_next_obs=False, hdf5_cache_mode="low_dim", seq_length=1)  # fmt: skip
    assert len(ds) == 24 and ds.n_demos == 4
    i = 0
    for path in find_episodes(src):
        a = read_episode(path).arrays
        for t in range(len(a["q_a"])):
            item = ds[i]
            i += 1
            obs = item["obs"]
            np.testing.assert_array_equal(obs["robot0_joint_pos"][0], a["q_a"][t])
            np.testing.assert_array_equal(obs["robot1_joint_pos"][0], a["q_b"][t])
            np.testing.assert_array_equal(obs["camera_a_image"][0], a["rgb_a"][t])
            np.testing.assert_array_equal(obs["depth_a"][0], a["depth_a"][t])
            np.testing.assert_array_equal(
                item["actions"][0],
                np.r_[a["action_a"][t], a["grip_a"][t], a["action_b"][t], a["grip_b"][t]],
            )
            assert item["rewards"][0] == a["reward"][t] and item["dones"][0] == float(a["done"][t])
    ds.close_and_delete_hdf5_handle()


def test_robomimic_reads_the_fixture_as_we_do(fixture_script, tmp_path: Path) -> None:
    import robomimic.utils.obs_utils as obs_utils
    from interop_testlib import FIXTURES
    from robomimic.utils.dataset import SequenceDataset

    path = FIXTURES / "robomimic_twoarm.hdf5"
    fixture_script.check_robomimic(path)
    convert(path, tmp_path / "ours")
    keys = ["robot0_joint_pos", "robot0_eye_in_hand_image"]
    obs_utils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": keys[:1], "rgb": keys[1:]}})
    ds = SequenceDataset(
        str(path),
        obs_keys=keys,
        dataset_keys=["actions"],
        load_next_obs=False,
        hdf5_cache_mode=None,
    )
    i = 0
    for p in find_episodes(tmp_path / "ours"):
        a = read_episode(p).arrays
        for t in range(len(a["q_a"])):
            item = ds[i]
            i += 1
            np.testing.assert_array_equal(item["obs"]["robot0_eye_in_hand_image"][0], a["rgb_a"][t])
            np.testing.assert_array_equal(
                item["obs"]["robot0_joint_pos"][0].astype(np.float32), a["q_a"][t]
            )
            np.testing.assert_array_equal(
                item["actions"][0][:7].astype(np.float32), a["action_a"][t]
            )
    ds.close_and_delete_hdf5_handle()
