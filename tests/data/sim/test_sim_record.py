"""Recording: generate_dataset / teamvla synth write valid, honest, reproducible episodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from teamvla_data.sim import (
    BimanualEnv,
    WorldConfig,
    episode_seed,
    generate_dataset,
    read_png,
    record_episode,
)
from teamvla_data.sim.record import episode_id_for
from teamvla_schema import EpisodeWriter, read_episode, read_episode_meta
from teamvla_schema.cli import main
from teamvla_schema.errors import SchemaError

TASKS3 = ["lift", "handoff", "drawer"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("synth") / "ds"
    paths = generate_dataset(
        root, TASKS3, episodes_per_task=2, seed=7, workers=2, image_size=24, progress=False
    )
    return root, paths


def test_generated_episodes_validate_and_carry_their_metadata(dataset, capsys):
    root, paths = dataset
    assert [p.relative_to(root).as_posix() for p in paths] == [
        f"{t}/{episode_id_for(t, i)}.npz" for t in TASKS3 for i in range(2)
    ]
    assert main(["validate", str(root)]) == 0
    assert "6 ok, 0 bad" in capsys.readouterr().out
    for path in paths:
        meta = read_episode_meta(path).meta
        user = meta.user
        index = int(meta.episode_id.rsplit("-", 1)[1])
        assert user["seed"] == episode_seed(7, meta.task, index)
        assert user["target"] in ("red", "blue") and user["target"] in user["instruction"]
        assert user["base_seed"] == 7 and user["episode_index"] == index
        assert meta.success  # experts succeed on these seeds


def test_recorded_steps_are_honest(dataset):
    _, paths = dataset
    for path in paths:
        ep = read_episode(path)
        a = ep.arrays
        T = len(ep)
        assert a["rgb_a"].shape == (T, 24, 24, 3)
        assert set(a["phase"]) and all(p for p in a["phase"])
        # action_* are the expert's targets, which the world reaches at the next step
        assert np.array_equal(a["q_a"][1:], a["action_a"][:-1])
        assert np.array_equal(a["q_b"][1:], a["action_b"][:-1])
        assert set(np.unique(a["grip_a"])) <= {0.0, 1.0}
        # success per step: only the final observation
        assert a["success"][-1] and not a["success"][:-1].any()
        assert len(set(a["instruction"])) == 1 and set(a["task"]) == {ep.meta.task}
        # replaying the recorded actions in a fresh world reproduces the observations
        env = BimanualEnv(WorldConfig(image_size=24))
        obs = env.reset(ep.meta.task, ep.meta.user["seed"])
        for t in range(T):
            assert np.array_equal(obs["rgb_a"], a["rgb_a"][t]) and np.array_equal(
                obs["q_a"], a["q_a"][t]
            )
            if t < T - 1:
                obs, *_ = env.step(
                    {k: a[k][t] for k in ("action_a", "action_b", "grip_a", "grip_b")}
                )


def test_same_command_twice_gives_byte_identical_files(dataset, tmp_path):
    _root, paths = dataset
    again = generate_dataset(
        tmp_path / "again", TASKS3, 2, seed=7, workers=1, image_size=24, progress=False
    )
    for p, q in zip(paths, again, strict=True):
        assert p.read_bytes() == q.read_bytes()
    other = generate_dataset(
        tmp_path / "other", ["lift"], 1, seed=8, workers=1, image_size=24, progress=False
    )
    assert other[0].read_bytes() != paths[0].read_bytes()


def test_existing_episodes_are_not_overwritten_unless_asked(dataset, tmp_path):
    root = tmp_path / "ds"
    generate_dataset(root, ["lift"], 1, seed=0, image_size=16, progress=False)
    with pytest.raises(SchemaError, match="already exists"):
        generate_dataset(root, ["lift"], 1, seed=0, image_size=16, progress=False)
    generate_dataset(root, ["lift"], 1, seed=0, image_size=16, progress=False, overwrite=True)


def test_record_episode_with_an_explicit_instruction(tmp_path):
    env = BimanualEnv(WorldConfig(image_size=16, num_joints=4))
    with EpisodeWriter(tmp_path) as writer:
        res = record_episode(writer, env, "lift", 3, instruction="pick up the blue block")
    meta = read_episode_meta(res.path)
    assert res.success and meta.meta.user["target"] == "blue" and meta.meta.user["num_joints"] == 4
    assert meta.fields["q_a"].shape == (4,) and meta.meta.num_steps == res.num_steps


def test_synth_and_render_episode_commands(tmp_path, capsys):
    root = tmp_path / "ds"
    args = [
        "synth",
        "--tasks",
        "drawer",
        "--episodes-per-task",
        "1",
        "--out",
        str(root),
        "--image-size",
        "32",
        "--no-progress",
    ]
    assert main(args) == 0
    assert "1 episode(s)" in capsys.readouterr().out
    assert main(args) == 2  # exists: a clear error, exit status 2
    assert "already exists" in capsys.readouterr().err
    episode = root / "drawer" / "drawer-000000.npz"
    out = tmp_path / "sheet.png"
    assert (
        main(["render-episode", str(episode), "-o", str(out), "--frames", "5", "--scale", "1"]) == 0
    )
    sheet = read_png(out)
    assert sheet.dtype == np.uint8 and sheet.shape[2] == 3
    assert sheet.shape[1] == 5 * (32 + 2) + 2  # five frames per row
    frames = read_episode(episode, fields=["rgb_a"]).arrays["rgb_a"]
    assert np.array_equal(sheet[2:34, 2:34], frames[0])  # top-left cell: camera A, first step
    assert main(["render-episode", str(tmp_path / "missing.npz"), "-o", str(out)]) == 2


def test_synth_reads_task_configs(tmp_path, capsys):
    cfg = tmp_path / "lift.yaml"
    cfg.write_text(
        "task:\n  name: lift\n  instructions: ['hoist the {color} block']\n  max_steps: 80\n"
    )
    root = tmp_path / "ds"
    assert (
        main(
            [
                "synth",
                "--tasks",
                "lift",
                "--episodes-per-task",
                "1",
                "--out",
                str(root),
                "--config",
                str(cfg),
                "--image-size",
                "16",
                "--no-progress",
            ]
        )
        == 0
    )
    meta = read_episode_meta(root / "lift" / "lift-000000.npz").meta
    assert meta.user["instruction"].startswith("hoist the ") and meta.user["max_steps"] == 80
    cfg.write_text("task:\n  name: lift\n  max_step: 80\n")
    assert main(["synth", "--tasks", "lift", "--out", str(root), "--config", str(cfg)]) == 2
    assert "did you mean 'task.max_steps'" in capsys.readouterr().err
