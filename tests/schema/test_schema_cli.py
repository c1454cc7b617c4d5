"""The schema package's `teamvla inspect` and `teamvla validate` commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from schema_testlib import REPO_ROOT, make_steps, write_episode
from teamvla_schema import save_checkpoint
from teamvla_schema.cli import main


@pytest.fixture
def episode(tmp_path: Path) -> Path:
    steps = make_steps(3, phase="grasp")
    return write_episode(tmp_path / "episodes", steps, {"task": "lift", "user": {"seed": 3}})


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return save_checkpoint(
        tmp_path / "epoch_0002.ckpt",
        model={
            "encoder.weight": np.zeros((4, 3), np.float32),
            "encoder.bias": np.zeros(4, np.float32),
        },
        optimizer={
            "state": {0: {"exp_avg": np.zeros((4, 3), np.float32)}},
            "param_groups": [{"lr": 1e-3}],
        },
        training_state={"epoch": 2, "step": 40},
        config={"model": {"hidden": 64}},
        stats={"q_a": {"mean": np.zeros(7, np.float32)}},
    )


def test_inspect_episode(episode: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(episode)]) == 0
    out = capsys.readouterr().out
    assert str(episode) in out
    for expected in (
        "task       lift",
        "episode_id lift-000000",
        "num_steps  3",
        '"seed": 3',
        "fields:",
    ):
        assert expected in out, out
    assert "rgb_a" in out and "uint8" in out and "[3,8,8,3]" in out
    assert "phase" in out and "str" in out


def test_inspect_checkpoint(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    assert str(checkpoint) in out and "format 1" in out
    assert "model: 2 tensors, 16 values" in out
    assert "model/encoder.weight" in out and "F32" in out and "[4, 3]" in out
    assert "optimizer: 1 tensors, 12 values" in out
    assert '"epoch": 2' in out and '"hidden": 64' in out


def test_inspect_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.ckpt"
    bad.write_bytes(b"\x00" * 40)
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and str(bad) in err
    assert main(["inspect", str(tmp_path / "missing.npz")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_inspect_as_a_real_subprocess(episode: Path, checkpoint: Path) -> None:
    for path, expected in ((episode, "num_steps  3"), (checkpoint, "model: 2 tensors")):
        result = subprocess.run(
            [sys.executable, "-m", "teamvla_schema.cli", "inspect", str(path)],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert expected in result.stdout


def test_validate_good_root(episode: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = episode.parent.parent
    write_episode(root, make_steps(2, task="drawer"), {"task": "drawer"})
    assert main(["validate", str(root)]) == 0
    out = capsys.readouterr().out
    assert "2 episode file(s) checked, 2 ok, 0 bad" in out
    assert main(["validate", "-v", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"ok   {episode}" in out


def test_validate_root_with_bad_files(episode: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = episode.parent.parent
    task_dir = episode.parent
    bad = {
        task_dir / "empty.npz": (b"", "empty file"),
        task_dir / "noise.npz": (b"\x01\x02" * 100, "not an npz"),
        task_dir / "cut.npz": (episode.read_bytes()[:200], "corrupt"),
        root / "other" / "plain.npz": (None, "__meta__"),
    }
    for path, (data, _) in bad.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            np.savez(path, x=np.zeros(3))
        else:
            path.write_bytes(data)
    (task_dir / ".lift-000001.npz.99-0000.tmp").write_bytes(b"ignored temporary file")
    assert main(["validate", str(root)]) == 1
    lines = capsys.readouterr().out.splitlines()
    bad_lines = [line for line in lines if line.startswith("BAD")]
    assert len(bad_lines) == len(bad)
    for path, (_, reason) in bad.items():
        (line,) = [line for line in bad_lines if str(path) in line]
        assert reason in line, line
    assert lines[-1] == "5 episode file(s) checked, 1 ok, 4 bad"


def test_validate_missing_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_validate_subprocess_exit_codes(episode: Path) -> None:
    root = episode.parent.parent
    cmd = [sys.executable, "-m", "teamvla_schema.cli", "validate", str(root)]
    assert subprocess.run(cmd, capture_output=True, cwd=REPO_ROOT, timeout=120).returncode == 0
    (episode.parent / "bad.npz").write_bytes(b"garbage")
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 1
    assert "bad.npz" in result.stdout and "not an npz" in result.stdout


def test_help_lists_schema_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "inspect" in out and "validate" in out
