"""Two gloo processes on CPU (torchrun): DDP training equals one process on the union of their batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from teamvla_schema.config import dump_yaml
from teamvla_train.engine.metrics import read_metrics
from teamvla_train.policy import load_policy
from train_testlib import REPO, tiny_config, write_tiny_dataset


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_combined_batch(tmp_path: Path) -> None:
    root = write_tiny_dataset(tmp_path / "episodes", episodes_per_task=4, steps=12)
    # Ha = 1 and To = 1: no padded steps, so the mean of the two ranks' losses is the loss of their union.
    common = {"obs_history": 0, "action_horizon": 1, "val_fraction": 0.25}
    trainer = {"max_steps": 6, "ckpt_every": 3, "log_every": 1, "val_every": 3}
    ddp_cfg = tiny_config(root, dataset={**common, "batch_size": 4}, trainer=trainer)
    one_cfg = tiny_config(root, dataset={**common, "batch_size": 8}, trainer=trainer)
    for name, cfg in (("ddp", ddp_cfg), ("one", one_cfg)):
        (tmp_path / f"{name}.yaml").write_text(dump_yaml(cfg))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "teamvla_schema.cli",
            "train",
            "--config",
            str(tmp_path / "ddp.yaml"),
            "--out",
            str(tmp_path / "ddp"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=180,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = subprocess.run(
        [
            sys.executable,
            "-m",
            "teamvla_schema.cli",
            "train",
            "--config",
            str(tmp_path / "one.yaml"),
            "--out",
            str(tmp_path / "one"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=180,
    )
    assert one.returncode == 0, one.stderr[-3000:]

    # Only rank 0 wrote: one start record saying world_size 2, one set of checkpoints.
    lines = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    starts = [r for r in lines if r.get("event") == "start"]
    assert len(starts) == 1 and starts[0]["world_size"] == 2
    ckpts = sorted(p.name for p in (tmp_path / "ddp" / "checkpoints" / "multi").glob("*.ckpt"))
    assert ckpts == ["epoch_0001_step_00000003.ckpt", "epoch_0001_step_00000006.ckpt"]

    ddp_train = read_metrics(tmp_path / "ddp" / "metrics.jsonl", "train")
    one_train = read_metrics(tmp_path / "one" / "metrics.jsonl", "train")
    assert [r["step"] for r in ddp_train] == [r["step"] for r in one_train] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(
        [r["loss"] for r in ddp_train], [r["loss"] for r in one_train], rtol=1e-4
    )
    assert ddp_train[-1]["samples_per_s"] > 0

    # Same weights at the end (DDP averaged the gradients of the two halves). Six Adam steps
    # of lr 3e-3 move a weight by up to ~2e-2; float rounding (amplified by Adam where a
    # gradient is near zero) stays far below that.
    a = load_policy(tmp_path / "ddp").model.state_dict()
    b = load_policy(tmp_path / "one").model.state_dict()
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), rtol=1e-3, atol=2e-4, err_msg=k)
