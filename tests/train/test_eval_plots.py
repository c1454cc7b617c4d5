"""Pictures and the results table: rollout strip/GIF, training curves from JSONL, text table."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from teamvla_schema.errors import SchemaError
from teamvla_train.eval_report import format_table, plot_run
from teamvla_train.plots import plot_training_curves, rollout_gif, rollout_strip


def _frames(n: int = 10) -> list[np.ndarray]:
    return [np.full((8, 16, 3), 20 * i, np.uint8) for i in range(n)]


def test_rollout_strip_and_gif(tmp_path):
    png = rollout_strip(
        _frames(), tmp_path / "strip.png", num_frames=4, columns=2, scale=2, title="lift"
    )
    with Image.open(png) as img:
        assert img.format == "PNG" and img.width >= 2 * 32 and img.height >= 2 * 16
    gif = rollout_gif(_frames(), tmp_path / "ep.gif", scale=1)
    with Image.open(gif) as img:
        assert img.format == "GIF" and img.n_frames == 10
    with pytest.raises(ValueError, match="no frames"):
        rollout_strip([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="uint8"):
        rollout_gif([np.zeros((4, 4, 3), np.float32)], tmp_path / "x.gif")
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.gif").exists()


def _write_metrics(path, steps=6):
    lines = [{"event": "start", "step": 0}]
    for s in range(1, steps + 1):
        lines.append(
            {
                "split": "train",
                "step": s,
                "loss": 1.0 / s,
                "joint_a": 0.5 / s,
                "lr": 1e-3,
                "data_time": 0.001,
                "compute_time": 0.009,
            }
        )
        if s % 3 == 0:
            lines.append({"split": "val", "step": s, "loss": 1.2 / s})
    path.write_text(
        "".join(json.dumps(x) + "\n" for x in lines) + '{"split": "tr'
    )  # torn last line


def test_training_curves_from_a_run_dir(tmp_path):
    _write_metrics(tmp_path / "metrics.jsonl")
    out = plot_run(tmp_path)
    assert out == tmp_path / "training_curves.png"
    with Image.open(out) as img:
        assert img.format == "PNG" and img.height > img.width  # three stacked panels


def test_training_curves_need_series(tmp_path):
    with pytest.raises(SchemaError, match="no loss"):
        plot_training_curves([{"split": "train", "step": 1, "note": "x"}], tmp_path / "c.png")
    with pytest.raises(SchemaError, match=r"metrics\.jsonl"):
        plot_run(tmp_path)


def test_plot_command(tmp_path, capsys):
    from teamvla_schema.cli import main

    _write_metrics(tmp_path / "metrics.jsonl")
    assert main(["plot", str(tmp_path), "-o", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").is_file() and "c.png" in capsys.readouterr().out


def test_format_table_lists_tasks_and_rates():
    res = {
        "model": "single_brain",
        "closed_loop": {
            "lift": {"success_rate": 0.9, "swap_success_rate": 0.85, "episodes": 20},
            "drawer": {"success_rate": 0.5, "episodes": 20},
        },
        "mean_success_rate": 0.7,
        "offline": {"joint_mse": 0.001, "joint_l1": 0.02, "grip_accuracy": 0.97},
    }
    lines = format_table([res]).splitlines()
    assert lines[0].split()[:3] == ["task", "single_brain", "success"]
    rows = {ln.split()[0]: ln.split() for ln in lines[2:] if ln and not ln.startswith("-")}
    assert rows["lift"][1:] == ["90%", "85%", "20"]
    assert rows["drawer"][1:] == ["50%", "-", "20"]
    assert rows["mean"][1] == "70%"
    assert any("97.0%" in ln for ln in lines)
