"""``trainer.loggers``: JSONL, TensorBoard and W&B (offline) get the same metrics, the config and pictures.

Each backend is read back with its own reader: TensorBoard's ``EventAccumulator``
and W&B's transaction-log reader (``wandb leet inspect --json``, the wandb
package's own command, run on the ``.wandb`` file of each offline run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

from PIL import Image
from teamvla_schema.config import ConfigError, dump_yaml, from_dict, parse_yaml
from teamvla_schema.config import load_config as load_config_file
from teamvla_train.config import TrainerConfig, resolve_train_config
from teamvla_train.engine import train
from teamvla_train.engine.checkpointing import checkpoint_files
from teamvla_train.engine.loggers import configured_loggers, log_pictures
from teamvla_train.engine.metrics import read_metrics
from teamvla_train.engine.resume import resume_config_changes
from teamvla_train.plots import rollout_gif, rollout_strip
from train_testlib import tiny_config, write_tiny_dataset

ALL = ["jsonl", "tensorboard", "wandb"]


def wandb_records(run: Path) -> list[dict[str, Any]]:
    """The records of an offline W&B run, read by wandb's own reader of its transaction log."""
    (log_file,) = run.glob("run-*.wandb")
    # A local base URL: the reader has no reason to look up W&B's servers.
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_ERROR_REPORTING": "false"}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log_file)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def wandb_run(run: Path) -> dict[str, Any]:
    """An offline run as {"run": its run record, "rows": {step: history row}, "exit": exit record}."""
    records = wandb_records(run)
    rows = {int(r["history"]["step"]["num"]): r["history"]["item"] for r in records if r["type"] == "history"}  # fmt: skip
    (meta,) = (r["run"] for r in records if r["type"] == "run")
    exits = [r["exit"] for r in records if r["type"] == "exit"]
    return {"run": meta, "rows": rows, "exit": exits[-1] if exits else None, "dir": run}


def media(row: Mapping[str, Any], tag: str) -> dict[str, Any]:
    """A media value of a history row (the reader flattens it to ``<tag>.<field>`` keys)."""
    return {k[len(tag) + 1 :]: v for k, v in row.items() if k.startswith(tag + ".")}


def wandb_runs(run_dir: Path) -> list[dict[str, Any]]:
    """The offline runs of a run directory, oldest first."""
    runs = [wandb_run(p) for p in (run_dir / "wandb").glob("offline-run-*")]
    return sorted(runs, key=lambda r: r["run"]["start_time"])


def tensorboard(run_dir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(
        str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0}
    )
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A run of 6 steps with every logger, resumed from its step-3 checkpoint, then eval pictures."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    tmp = tmp_path_factory.mktemp("loggers")
    root = write_tiny_dataset(tmp / "episodes", episodes_per_task=3, steps=8)
    cfg = tiny_config(root, trainer={"max_steps": 6, "val_every": 3, "ckpt_every": 3, "loggers": ALL})  # fmt: skip
    run_dir = tmp / "run"
    train(cfg, run_dir=run_dir, progress=False)
    first = read_metrics(run_dir / "metrics.jsonl", "train")
    # As after a kill: continue from step 3; steps 4-6 are logged again.
    step3 = next(p for p in checkpoint_files(next((run_dir / "checkpoints").iterdir())) if "step_00000003" in p.name)  # fmt: skip
    train(cfg, run_dir=run_dir, resume=step3, progress=False)
    frames = [np.full((8, 16, 3), 40 * i, np.uint8) for i in range(4)]
    pictures = [
        rollout_strip(frames, tmp / "pics" / "rollout_lift.png"),
        rollout_gif(frames, tmp / "pics" / "rollout_lift.gif"),
    ]
    config = resolve_train_config(cfg).resolved
    assert log_pictures(run_dir, configured_loggers(config), pictures, step=6, config=config)
    return {"run_dir": run_dir, "first": first, "pictures": pictures, "config": config}


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_tensorboard_has_the_jsonl_metrics_config_and_pictures(logged_run: dict[str, Any]) -> None:
    run_dir = logged_run["run_dir"]
    acc = tensorboard(run_dir)
    for split in ("train", "val"):
        records = read_metrics(run_dir / "metrics.jsonl", split)
        keys = [k for k, v in records[-1].items() if isinstance(v, float)]
        assert "loss" in keys
        for key in keys:
            events = acc.Scalars(f"{split}/{key}")
            # One event per step: the resumed writer purged the first run's steps 4-6.
            assert [e.step for e in events] == [r["step"] for r in records], (split, key)
            assert [e.value for e in events] == pytest.approx([r[key] for r in records], rel=1e-6)
    # Events' numbers too (a start, a resume and an end record).
    assert acc.Scalars("start/parameters")[0].value > 0
    assert [e.step for e in acc.Scalars("resume/total_steps")] == [3]
    (text,) = acc.Tensors("config/text_summary")[:1]
    shown = textwrap.dedent(text.tensor_proto.string_val[0].decode())  # indented for Markdown
    assert parse_yaml(shown) == logged_run["config"]
    # Pictures: the training curves of each training process, the eval job's strip and GIF.
    curves = acc.Images("pictures/training_curves")
    assert curves[-1].encoded_image_string == (run_dir / "training_curves.png").read_bytes()
    strip, gif = logged_run["pictures"]
    assert acc.Images("pictures/rollout_lift")[-1].encoded_image_string == strip.read_bytes()
    (anim,) = acc.Images("animations/rollout_lift")
    assert anim.step == 6 and anim.encoded_image_string == gif.read_bytes()
    with Image.open(gif) as img:
        assert (anim.width, anim.height) == img.size and img.n_frames == 4


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_wandb_offline_runs_have_the_jsonl_metrics_config_and_pictures(
    logged_run: dict[str, Any],
) -> None:
    run_dir = logged_run["run_dir"]
    runs = wandb_runs(run_dir)
    assert [r["run"]["job_type"] for r in runs] == ["train", "resume", "eval"]
    assert {r["run"]["run_group"] for r in runs} == {run_dir.name}
    assert all(r["exit"]["exit_code"] == 0 for r in runs)
    first, resumed, evaluation = runs
    for run in (first, resumed):
        config = run["run"]["config"]["update"]
        assert config["trainer"]["max_steps"] == 6 and config["trainer"]["loggers"] == ALL
    # The first process logged steps 1-6; the resumed one 3 (its resume event) to 6, again.
    records = read_metrics(run_dir / "metrics.jsonl", "train")
    assert sorted(first["rows"]) == [0, 1, 2, 3, 4, 5, 6]
    assert sorted(resumed["rows"]) == [3, 4, 5, 6]
    for rec in logged_run["first"]:
        assert first["rows"][rec["step"]]["train/loss"] == rec["loss"]
        assert first["rows"][rec["step"]]["train/lr"] == rec["lr"]
    for rec in records[3:]:
        assert resumed["rows"][rec["step"]]["train/loss"] == rec["loss"]
    for rec in read_metrics(run_dir / "metrics.jsonl", "val")[:1]:
        assert first["rows"][rec["step"]]["val/loss"] == rec["loss"]
    assert first["rows"][0]["start/parameters"] > 0
    assert resumed["rows"][3]["resume/total_steps"] == 6
    # Pictures: the curves at the end of each training process, the eval job's strip and GIF.
    for run in (first, resumed):
        curves = media(run["rows"][6], "pictures/training_curves")
        assert curves["_type"] == "image-file" and curves["format"] == "png"
        assert (run["dir"] / "files" / curves["path"]).is_file()
    strip, gif = logged_run["pictures"]
    still = media(evaluation["rows"][6], "pictures/rollout_lift")
    assert still["_type"] == "image-file"
    assert (evaluation["dir"] / "files" / still["path"]).read_bytes() == strip.read_bytes()
    anim = media(evaluation["rows"][6], "animations/rollout_lift")
    assert anim["_type"] == "video-file"
    assert (evaluation["dir"] / "files" / anim["path"]).read_bytes() == gif.read_bytes()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_failing_run_still_finishes_its_wandb_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb")
    from teamvla_train.engine import loop

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(loop, "save_checkpoint", broken)
    root = write_tiny_dataset(tmp_path / "episodes", episodes_per_task=3, steps=8)
    cfg = tiny_config(root, trainer={"max_steps": 2, "ckpt_every": 2, "loggers": ["wandb"]})
    with pytest.raises(RuntimeError, match="disk on fire"):
        train(cfg, run_dir=tmp_path / "run", progress=False)
    (run,) = wandb_runs(tmp_path / "run")
    assert run["exit"]["exit_code"] == 1
    assert sorted(run["rows"]) == [0, 1, 2]


@pytest.mark.parametrize("package", ["tensorboard", "wandb"])
def test_a_missing_package_is_a_one_line_error_naming_the_extra(
    package: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from teamvla_schema.cli import main

    monkeypatch.setitem(sys.modules, package, None)  # `import <package>` now fails
    message = f"trainer.loggers: {package} needs the {package} package: install teamvla-train[{package}]"  # fmt: skip
    root = write_tiny_dataset(tmp_path / "episodes", episodes_per_task=2, steps=6)
    cfg = tiny_config(root, trainer={"loggers": ["jsonl", package]})
    with pytest.raises(ImportError) as info:
        train(cfg, run_dir=tmp_path / "run", progress=False)
    assert str(info.value) == message
    assert not (tmp_path / "run").exists()  # before any work
    config = tmp_path / "train.yaml"
    config.write_text(dump_yaml(cfg))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"]) == 2  # fmt: skip
    assert capsys.readouterr().err.strip() == f"error: {message}"
    # After an evaluation (its results are saved), a warning instead.
    picture = tmp_path / "x.png"
    assert not log_pictures(tmp_path / "run", ["jsonl", package], [picture], step=0, strict=False)
    assert "pictures not logged" in caplog.text and message in caplog.text


def test_a_bad_logger_name_is_refused_with_the_value(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, trainer={"loggers": ["jsonl", "tensorbord"]})
    with pytest.raises(ConfigError) as info:
        resolve_train_config(cfg)
    text = str(info.value)
    assert "trainer.loggers[1]" in text and "'tensorbord'" in text
    assert "did you mean 'tensorboard'" in text


def test_jsonl_is_implied_and_the_old_tensorboard_switch_still_loads_and_resumes(
    tmp_path: Path,
) -> None:
    assert TrainerConfig().loggers == ["jsonl"]
    assert from_dict(TrainerConfig, {"loggers": ["wandb"]}).loggers == ["jsonl", "wandb"]
    old = from_dict(TrainerConfig, {"tensorboard": True})
    assert (old.loggers, old.tensorboard) == (["jsonl", "tensorboard"], False)
    # A config file and a checkpoint config of an older version (tensorboard: true, no loggers).
    path = tmp_path / "old.yaml"
    path.write_text(dump_yaml(tiny_config(tmp_path, trainer={"tensorboard": True})))
    saved = load_config_file(path).data
    assert resolve_train_config(saved).trainer.loggers == ["jsonl", "tensorboard"]
    assert configured_loggers(saved) == ["jsonl", "tensorboard"]
    now = resolve_train_config(tiny_config(tmp_path, trainer={"loggers": ["jsonl", "wandb"]}))
    assert resume_config_changes(saved, now.resolved) == []
