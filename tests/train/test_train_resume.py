"""Kill a real training process after it wrote a checkpoint, resume it, and compare with an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from teamvla_schema.config import dump_yaml
from teamvla_train.engine.checkpointing import read_latest
from teamvla_train.engine.metrics import read_metrics
from train_testlib import REPO, tiny_config, write_tiny_dataset

STEPS = 60


def teamvla(*args: str) -> list[str]:
    return [sys.executable, "-m", "teamvla_schema.cli", *args]


@pytest.mark.slow
def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    root = write_tiny_dataset(tmp_path / "episodes", episodes_per_task=6, steps=16)
    # Dropout and loader augmentation on: both random streams must be restored exactly.
    cfg = tiny_config(
        root,
        model={"dropout": 0.1},
        dataset={"augment": {"enabled": True, "shift_pixels": 2}},
        trainer={
            "max_steps": STEPS,
            "ckpt_every": 5,
            "keep_last": 2,
            "log_every": 1,
            "val_every": 25,
        },
    )
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(dump_yaml(cfg))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    reference = subprocess.run(
        teamvla(
            "train", "--config", str(cfg_path), "--out", str(tmp_path / "ref"), "--no-progress"
        ),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert reference.returncode == 0, reference.stderr

    victim_dir = tmp_path / "victim"
    victim = subprocess.Popen(
        teamvla("train", "--config", str(cfg_path), "--out", str(victim_dir), "--no-progress"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
    )
    pointer = victim_dir / "checkpoints" / "multi" / "latest"
    deadline = time.monotonic() + 240
    while not pointer.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = read_latest(pointer.parent)["step"]
    assert 5 <= killed_at < STEPS

    resumed = subprocess.run(
        teamvla(
            "train",
            "--config",
            str(cfg_path),
            "--out",
            str(victim_dir),
            "--resume",
            "auto",
            "--no-progress",
        ),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert read_latest(pointer.parent)["step"] == STEPS

    for split in ("train", "val"):
        ref = read_metrics(tmp_path / "ref" / "metrics.jsonl", split)
        got = read_metrics(victim_dir / "metrics.jsonl", split)
        assert [r["step"] for r in got] == [r["step"] for r in ref]
        for key in ("loss", "joint_a", "joint_b", "grip_a", "grip_b"):
            np.testing.assert_allclose(
                [r[key] for r in got],
                [r[key] for r in ref],
                rtol=1e-5,
                atol=1e-7,
                err_msg=f"{split} {key}",
            )
    # The runs really differ in history: the victim resumed after the kill.
    events = [
        line
        for line in (victim_dir / "metrics.jsonl").read_text().splitlines()
        if '"event": "resume"' in line
    ]
    assert len(events) == 1 and f'"step": {killed_at}' in events[0]
