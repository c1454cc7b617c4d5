"""``teamvla train`` end to end on a tiny simulator dataset, and config errors before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from teamvla_schema.config import load_config
from teamvla_train.engine.checkpointing import resolve_checkpoint
from teamvla_train.engine.metrics import read_metrics
from teamvla_train.policy import load_policy
from train_testlib import REPO, TINY_MODEL, run_python

CONFIG = str(REPO / "configs" / "train_bc.yaml")


def teamvla(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "teamvla_schema.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )


def tiny_overrides() -> list[str]:
    out = []
    for k, v in TINY_MODEL.items():
        out.append(f"model.{k}={v}".replace(" ", ""))
    return out


@pytest.mark.slow
def test_cli_train_end_to_end_on_generated_episodes(tmp_path: Path) -> None:
    gen = run_python(
        "from teamvla_data.sim import generate_dataset; "
        f"generate_dataset({str(tmp_path / 'episodes')!r}, episodes_per_task=2, image_size=32, progress=False)"
    )
    assert gen.returncode == 0, gen.stderr
    run_dir = tmp_path / "run"
    proc = teamvla(
        "train", "--config", CONFIG, "--out", str(run_dir), "--no-progress",
        f"dataset.roots=[{tmp_path / 'episodes'}]", "dataset.num_workers=0", "dataset.batch_size=16",
        "dataset.val_fraction=0.34", "model.name=msg_passing", *tiny_overrides(),
        "trainer.max_steps=4", "trainer.log_every=2", "trainer.val_every=2", "trainer.num_threads=1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ckpt = resolve_checkpoint(run_dir)
    assert f"last checkpoint {ckpt}" in proc.stdout
    assert ckpt.parent.name == "multi"  # three tasks
    # The resolved config was saved first, and is the one in the checkpoint.
    saved = load_config(run_dir / "config.yaml").data
    assert saved["model"]["name"] == "msg_passing" and saved["trainer"]["max_steps"] == 4
    assert saved["eval"]["tasks"] == ["lift", "handoff", "drawer"]
    policy = load_policy(ckpt)
    assert policy.config == saved
    assert (policy.obs_history, policy.action_horizon, policy.image_size) == (
        saved["dataset"]["obs_history"],
        saved["dataset"]["action_horizon"],
        (32, 32),
    )
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl", "train")] == [2, 4]
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl", "val")] == [2, 4]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.nme=single_brain", "did you mean 'model.name'"),
        ("model.name=big_brain", "expected one of ['single_brain', 'msg_passing']"),
        ("trainer.max_steps=-3", "trainer.max_steps: expected a value >= 0"),
        ("optim.betas=[0.9]", "betas must be two numbers"),
        ("dataset.batch_sise=3", "did you mean 'dataset.batch_size'"),
        ("model.conv_strides=[2,3]", "conv_strides must give 1 or 2 for each of the 3 conv layers"),
        ("model.conv_channels=[4,4,4,4,4,4]", "is too small for conv strides [2, 2, 2, 2, 2, 2]"),
    ],
)
def test_cli_rejects_bad_config_before_any_work(
    tmp_path: Path, override: str, message: str
) -> None:
    run_dir = tmp_path / "run"
    proc = teamvla("train", "--config", CONFIG, "--out", str(run_dir), override, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not run_dir.exists()


def test_cli_resume_auto_needs_a_run_dir() -> None:
    proc = teamvla("train", "--config", CONFIG, "--resume", "auto", timeout=60)
    assert proc.returncode == 2 and "--out" in proc.stderr


def test_train_config_module_does_not_import_torch() -> None:
    code = (
        "import sys; from teamvla_train.config import resolve_train_config; "
        "from teamvla_schema.config import load_config; "
        f"c = resolve_train_config(load_config({CONFIG!r})); "
        "assert 'torch' not in sys.modules, 'torch imported'; print(c.model.name, c.eval.episodes_per_task)"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["single_brain", "20"]
