"""Trainer building blocks: schedule shape, gradient accumulation, optimiser groups, train/val loop on synthetic data."""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from teamvla_train.algos.bc import train_step  # noqa: E402
from teamvla_train.config import ModelConfig, SchedulerConfig  # noqa: E402
from teamvla_train.engine import train  # noqa: E402
from teamvla_train.engine.metrics import read_metrics  # noqa: E402
from teamvla_train.engine.optim import build_optimizer, build_scheduler, lr_multiplier  # noqa: E402
from teamvla_train.models import make_model  # noqa: E402
from teamvla_train.synthetic import SyntheticData, synthetic_batch  # noqa: E402
from train_testlib import TINY_MODEL  # noqa: E402


def test_scheduler_warmup_then_cosine() -> None:
    cfg = SchedulerConfig(name="cosine", warmup_steps=10, min_lr_ratio=0.1)
    total = 100
    mult = [lr_multiplier(s, cfg=cfg, total_steps=total) for s in range(total)]
    # Linear warm-up: equal increments, reaching the peak on the last warm-up step.
    assert mult[0] == pytest.approx(0.1)
    assert all(b - a == pytest.approx(0.1) for a, b in itertools.pairwise(mult[:10]))
    assert mult[9] == pytest.approx(1.0)
    # Cosine: from the peak, strictly decreasing, to min_lr_ratio at the last step; halfway at the midpoint.
    decay = mult[10:]
    assert all(b < a for a, b in itertools.pairwise(decay))
    assert decay[-1] == pytest.approx(0.1)
    mid = 10 + (total - 1 - 10) / 2
    assert lr_multiplier(int(mid), cfg=cfg, total_steps=total) == pytest.approx(0.55, abs=0.02)
    # Constant after warm-up.
    const = SchedulerConfig(name="constant", warmup_steps=4)
    assert [lr_multiplier(s, cfg=const, total_steps=50) for s in (0, 3, 4, 49)] == [
        0.25,
        1.0,
        1.0,
        1.0,
    ]


def test_lambda_lr_follows_the_multiplier() -> None:
    cfg = SchedulerConfig(name="cosine", warmup_steps=3, min_lr_ratio=0.0)
    p = torch.nn.Parameter(torch.zeros(()))
    opt = torch.optim.AdamW([p], lr=2.0)
    sched = build_scheduler(opt, cfg, total_steps=12)
    seen = []
    for _ in range(12):
        seen.append(opt.param_groups[0]["lr"])  # the lr this optimiser step uses
        opt.step()
        sched.step()
    assert seen == pytest.approx(
        [2.0 * lr_multiplier(s, cfg=cfg, total_steps=12) for s in range(12)]
    )
    assert seen[-1] == pytest.approx(0.0, abs=1e-12)


def test_weight_decay_only_on_weights() -> None:
    model = make_model(ModelConfig(**TINY_MODEL), obs_history=0, action_horizon=2)
    opt = build_optimizer(
        model, type("O", (), {"lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.99], "eps": 1e-8})()
    )
    decay, no_decay = ({id(p) for p in g["params"]} for g in opt.param_groups)
    assert opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[1]["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[i].endswith("weight") for i in decay)
    assert any("embed" in names[i] for i in no_decay) and any("norm" in names[i] for i in no_decay)
    assert decay | no_decay == set(names) and not decay & no_decay


@pytest.mark.parametrize("name", ["single_brain", "msg_passing"])
def test_gradient_accumulation_matches_one_big_batch(name: str) -> None:
    torch.manual_seed(0)
    model = make_model(ModelConfig(name=name, **TINY_MODEL), obs_history=1, action_horizon=3)
    # Move the heads off zero so every parameter gets a gradient.
    for p in model.parameters():
        p.data.add_(0.01 * torch.randn_like(p))
    twin = copy.deepcopy(model)
    big = synthetic_batch(
        batch_size=8, obs_history=1, action_horizon=3, image_size=(16, 16), seed=5
    )
    halves = [{k: v[i : i + 4] for k, v in big.items()} for i in (0, 4)]

    def step(m: torch.nn.Module, micro: list) -> dict:
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        return train_step(
            model=m, optimizer=opt, scheduler=sched, micro_batches=micro, device=torch.device("cpu")
        )

    before = [p.detach().clone() for p in model.parameters()]
    m_big = step(model, [big])
    m_acc = step(twin, halves)
    torch.testing.assert_close(m_acc["loss"], m_big["loss"], rtol=1e-5, atol=1e-6)
    moved = 0
    for p0, pa, pb in zip(before, model.parameters(), twin.parameters(), strict=True):
        # With SGD(lr=1) the update is the gradient itself.
        torch.testing.assert_close(p0 - pb, p0 - pa, rtol=1e-4, atol=1e-6)
        moved += int(not torch.equal(p0, pa))
    assert moved > 0


def test_train_on_synthetic_data_logs_and_checkpoints(tmp_path: Path) -> None:
    cfg = {
        "dataset": {"roots": ["unused"], "batch_size": 8, "obs_history": 0, "action_horizon": 2},
        "model": TINY_MODEL,
        "trainer": {
            "max_steps": 0,
            "epochs": 3,
            "log_every": 2,
            "val_every": 4,
            "keep_last": 2,
            "num_threads": 1,
        },
        "scheduler": {"warmup_steps": 2},
    }
    data = SyntheticData(batch_size=8, action_horizon=2, image_size=(16, 16), batches_per_epoch=5)
    result = train(cfg, run_dir=tmp_path, data=data, progress=False)
    # 3 epochs x 5 steps; one checkpoint per epoch, the last two kept.
    assert result.steps == 15
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints" / "multi").glob("*.ckpt"))
    assert ckpts == ["epoch_0002.ckpt", "epoch_0003.ckpt"]
    assert result.last_checkpoint == tmp_path / "checkpoints" / "multi" / "epoch_0003.ckpt"
    train_recs = read_metrics(tmp_path / "metrics.jsonl", "train")
    assert [r["step"] for r in train_recs] == [2, 4, 6, 8, 10, 12, 14, 15]
    for rec in train_recs:
        assert {
            "loss",
            "joint_a",
            "grip_b",
            "lr",
            "samples_per_s",
            "data_time",
            "compute_time",
        } <= set(rec)
        assert math.isfinite(rec["loss"]) and rec["samples_per_s"] > 0
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl", "val")] == [4, 8, 12, 15]
    assert "val_loss" in result.final_metrics and "train_loss" in result.final_metrics
    assert (tmp_path / "config.yaml").is_file()


def test_prefetcher_keeps_order_and_forwards_errors() -> None:
    from teamvla_train.engine.prefetch import Prefetcher

    assert list(Prefetcher(iter(range(50)), depth=3)) == list(range(50))

    def broken():
        yield 1
        raise KeyError("bad batch")

    it = Prefetcher(broken(), depth=2)
    assert next(it) == 1
    with pytest.raises(KeyError, match="bad batch"):
        next(it)
    # Closing early stops the thread without consuming the source to its end.
    seen = []

    def endless():
        i = 0
        while True:
            seen.append(i)
            yield i
            i += 1

    it = Prefetcher(endless(), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert not it._thread.is_alive()
    assert len(seen) <= 3 + 2 + 1
