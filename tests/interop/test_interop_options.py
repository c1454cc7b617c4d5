"""--map renames, vector layouts, the command line, and what happens to keys without a counterpart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from interop_testlib import FIXTURES, same_episodes
from teamvla_data.interop import convert, detect_format
from teamvla_data.interop.mapping import Layout, aloha_layout, parse_layout, parse_map
from teamvla_schema import SchemaError, find_episodes, read_episode
from teamvla_schema.cli import main

pytest.importorskip("pyarrow")  # teamvla-data[lerobot]; the dev group has it
pytest.importorskip("PIL")
IMAGES = FIXTURES / "lerobot_aloha_images"


def test_map_picks_another_camera_and_keeps_the_displaced_one(
    fixture_script, tmp_path: Path
) -> None:
    convert(IMAGES, tmp_path / "out", renames=["observation.images.cam_high=rgb_a"])
    ep = read_episode(find_episodes(tmp_path / "out")[0])
    cams = fixture_script.fixture_episodes()[0]["cameras"]
    np.testing.assert_array_equal(ep.arrays["rgb_a"], cams["cam_high"])
    np.testing.assert_array_equal(ep.arrays["rgb_b"], cams["cam_right_wrist"])
    np.testing.assert_array_equal(
        ep.arrays["cam_left_wrist"], cams["cam_left_wrist"]
    )  # kept, not dropped
    assert (
        ep.meta.user["interop"]["lerobot"]["keys"]["cam_left_wrist"]
        == "observation.images.cam_left_wrist"
    )


def test_map_names_the_export_keys(plain_root: Path, tmp_path: Path) -> None:
    convert(plain_root, tmp_path / "lr", dst_format="lerobot", fps=5, cameras="png",
            renames=["observation.images.top=rgb_a", "observation.qpos=state"])  # fmt: skip
    feats = json.loads((tmp_path / "lr" / "meta" / "info.json").read_text())["features"]
    assert "observation.images.top" in feats and "observation.images.rgb_a" not in feats
    assert "observation.qpos" in feats and "observation.state" not in feats
    convert(tmp_path / "lr", tmp_path / "back")
    a, b = find_episodes(plain_root), find_episodes(tmp_path / "back")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def test_layout_options_override_aloha(fixture_script, tmp_path: Path) -> None:
    convert(IMAGES, tmp_path / "out", state_layout="q_a:6,q_b:6,temp_a:1,temp_b:1",
            action_layout="grip_a:1,grip_b:1,action_a:6,action_b:6")  # fmt: skip
    ep = read_episode(find_episodes(tmp_path / "out")[0])
    want = fixture_script.fixture_episodes()[0]
    np.testing.assert_array_equal(ep.arrays["q_a"], want["state"][:, :6])
    np.testing.assert_array_equal(ep.arrays["q_b"], want["state"][:, 6:12])
    np.testing.assert_array_equal(ep.arrays["temp_b"], want["state"][:, 13])
    np.testing.assert_array_equal(ep.arrays["grip_b"], want["action"][:, 1])
    np.testing.assert_array_equal(ep.arrays["action_b"], want["action"][:, 8:])
    assert "grip_state_a" not in ep.arrays
    with pytest.raises(SchemaError, match="covers 12 values, the dataset's state vector has 14"):
        convert(IMAGES, tmp_path / "bad", state_layout="q_a:6,q_b:6")


def test_layout_and_map_parsing() -> None:
    assert aloha_layout("state", 14) == Layout(
        (("q_a", 6), ("grip_state_a", 1), ("q_b", 6), ("grip_state_b", 1))
    )
    assert str(aloha_layout("action", 8)) == "action_a:3,grip_a:1,action_b:3,grip_b:1"
    layout = parse_layout("x:2, y:1", "state")
    parts = layout.split(np.arange(6.0).reshape(2, 3))
    assert parts["x"].tolist() == [[0, 1], [3, 4]] and parts["y"].tolist() == [2, 5]
    np.testing.assert_array_equal(layout.join(parts), np.arange(6.0).reshape(2, 3))
    with pytest.raises(SchemaError, match="even state width"):
        aloha_layout("state", 7)
    with pytest.raises(ValueError, match="bad --action-layout segment"):
        parse_layout("a:0", "action")
    assert parse_map(["observation.images.top=rgb_a", " action = action "]) == {
        "observation.images.top": "rgb_a",
        "action": "action",
    }
    for bad in (["no-equals"], ["k=not a field"], ["k=a", "k=b"], ["k=a", "j=a"]):
        with pytest.raises(ValueError):
            parse_map(bad)


def test_teamvla_to_teamvla_renames_fields_and_sets_fps(rich_root: Path, tmp_path: Path) -> None:
    convert(rich_root, tmp_path / "out", renames=["phase=stage"], fps=30)
    a, b = (
        read_episode(find_episodes(rich_root)[0]),
        read_episode(find_episodes(tmp_path / "out")[0]),
    )
    assert "phase" not in b.arrays and b.arrays["stage"].tolist() == a.arrays["phase"].tolist()
    assert b.meta.fps == 30.0 and a.meta.fps is None
    with pytest.raises(ValueError, match="does not have"):
        convert(rich_root, tmp_path / "bad", renames=["nope=x"])


def test_the_command_line(plain_root: Path, tmp_path: Path, capsys) -> None:
    dst = tmp_path / "lr"
    argv = ["convert", str(plain_root), str(dst), "--to", "lerobot", "--fps", "10", "--cameras", "png",
            "--map", "observation.images.top=rgb_a", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "converted 4 episode(s), 24 steps, teamvla -> lerobot" in out and "episodes/s" in out
    assert "cameras: PNG images" in out
    assert detect_format(dst) == "lerobot"
    assert (
        main(["convert", str(dst), str(tmp_path / "back"), "--from", "lerobot", "--no-progress"])
        == 0
    )
    assert main(argv) == 2  # exists
    assert "already exists (pass --overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_export_needs_an_fps(plain_root: Path, tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"no recording rate \(fps\).*pass --fps"):
        convert(plain_root, tmp_path / "lr", dst_format="lerobot", cameras="png")
    assert not tmp_path.joinpath("lr").exists() and not list(tmp_path.iterdir())


def test_lerobot_to_robomimic_directly(tmp_path: Path) -> None:
    pytest.importorskip("h5py")
    convert(IMAGES, tmp_path / "via-ours")
    convert(IMAGES, tmp_path / "demos.hdf5", dst_format="robomimic")
    convert(tmp_path / "demos.hdf5", tmp_path / "via-robomimic")
    same_episodes(tmp_path / "via-ours", tmp_path / "via-robomimic")  # metadata, fps, every array


def test_registering_the_command_imports_no_optional_library() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from teamvla_schema.cli import build_parser; p = build_parser(); "
        "p.parse_args(['convert', 'a', 'b']); "
        "loaded = [m for m in ('pyarrow', 'h5py', 'av') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
