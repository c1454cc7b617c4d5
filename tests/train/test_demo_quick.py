"""`teamvla demo --quick --out DIR` end to end: data, training, evaluation, pictures, results.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from PIL import Image
from teamvla_schema import find_episodes, load_checkpoint
from teamvla_schema.cli import main


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path, capsys, monkeypatch):
    # From a directory without configs/: the demo uses the config shipped in the package.
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", "demo", "--no-progress"]) == 0
    printed = capsys.readouterr().out

    results = json.loads((out / "results.json").read_text())
    tasks = ["lift", "handoff", "drawer"]
    assert list(results["success_rate"]) == tasks
    assert all(0.0 <= results["success_rate"][t] <= 1.0 for t in tasks)
    assert results["episodes"] == {t: 2 for t in tasks} and results["episodes_per_task"] == 2
    assert results["model"] == "msg_passing" and results["quick"] is True

    # Data, checkpoint, logs and pictures all live under --out.
    assert len(find_episodes(out / "data")) == 9 and results["data"]["recorded_now"]
    ckpt = Path(results["checkpoint"])
    assert ckpt.is_file() and out in ckpt.parents
    assert load_checkpoint(ckpt)["config"]["model"]["name"] == "msg_passing"
    assert (out / "runs" / "msg_passing-quick" / "metrics.jsonl").is_file()
    for name in (
        "rollout_lift.png",
        "rollout_lift.gif",
        "rollout_drawer.png",
        "training_curves.png",
    ):
        with Image.open(out / "pictures" / name) as img:
            assert img.width > 0
    evaluation = json.loads((out / "eval.json").read_text())["results"][0]
    assert evaluation["closed_loop"]["lift"]["swap_episodes"] == 2

    # The table is printed.
    assert "lift" in printed and "drawer" in printed and "results.json" in printed

    # A second run reuses the data and the finished training.
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["data"]["recorded_now"] is False and again["checkpoint"] == results["checkpoint"]
    assert (
        again["success_rate"] == results["success_rate"]
    )  # same policy, same seeds: deterministic
