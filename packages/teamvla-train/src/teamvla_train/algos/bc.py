"""Behaviour cloning: regress the expert's action chunks from observation windows.

The whole algorithm, top to bottom:

    data      make_dataloader over the episode roots (teamvla_train.data), this rank's shard
    network   the policy named by model.name, normalised with the dataset statistics
    optimiser AdamW (decay on conv/linear weights), warm-up + cosine schedule
    update    fetch grad_accum_steps micro-batches (a background thread loads ahead);
              for each: outputs = policy(batch); loss = bc_loss(outputs, batch)
              (masked L1/MSE on joints + BCE on grippers, weights model.joint_weight /
              model.grip_weight); backward of loss / grad_accum_steps (DDP all-reduces on
              the last); clip; step; schedule step
    state     epoch and micro-batch position in it (the sampler resumes there)

The loss is :func:`teamvla_train.algos.bc_loss.bc_loss`; the network only maps
observations to outputs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from teamvla_train.algos.base import Context, StepOutput
from teamvla_train.algos.bc_loss import bc_loss
from teamvla_train.config import ModelConfig, TrainConfig
from teamvla_train.data import TrainData, build_train_data
from teamvla_train.engine.device import autocast, grad_sync, to_device, unwrap
from teamvla_train.engine.distributed import SINGLE_PROCESS, DistInfo, all_reduce_sum
from teamvla_train.engine.optim import build_optimizer, build_scheduler, restore_optimizer
from teamvla_train.engine.prefetch import Prefetcher
from teamvla_train.engine.resume import check_weights_fit
from teamvla_train.models import BimanualPolicy, make_model
from teamvla_train.normalization import Affine
from teamvla_train.policy import POLICY_KEY, policy_spec, state_dict_from_numpy

if TYPE_CHECKING:
    from teamvla_data.stats import NormalizationStats


def build_model(cfg: TrainConfig, *, normalization: Affine | None = None) -> BimanualPolicy:
    """The policy named by ``cfg.model.name``, sized for the dataset's windows."""
    model = make_model(
        cfg.model, obs_history=cfg.dataset.obs_history, action_horizon=cfg.dataset.action_horizon
    )
    if normalization is not None:
        model.set_normalization(**normalization.model_buffers())
    return model


def build_data(
    cfg: TrainConfig,
    *,
    dist_info: DistInfo = SINGLE_PROCESS,
    device: torch.device | None = None,
    stats: NormalizationStats | None = None,
) -> TrainData:
    """Train/val loaders for this rank, plus statistics and normalisation (see :mod:`teamvla_train.data`);
    ``stats`` replaces the statistics computed from the data."""
    return build_train_data(
        cfg,
        dist_info=dist_info,
        pin_memory=device is not None and device.type == "cuda",
        stats=stats,
    )


def train_step(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    micro_batches: Sequence[Mapping[str, Any]],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    grad_clip: float = 0.0,
    loss_cfg: ModelConfig | None = None,
) -> dict[str, torch.Tensor]:
    """One BC optimiser step over ``micro_batches`` (gradient accumulation); returns detached metrics.

    The loss of each micro-batch is divided by their number, so the gradient
    equals that of one batch of all their samples. Under DDP, gradients are
    all-reduced once, on the last micro-batch. No host synchronisation here:
    the metrics stay tensors on ``device``. ``loss_cfg`` holds the loss weights
    (default: the model's own config).
    """
    cfg = loss_cfg if loss_cfg is not None else unwrap(model).cfg
    assert isinstance(cfg, ModelConfig)
    n = len(micro_batches)
    totals: dict[str, torch.Tensor] = {}
    for i, batch in enumerate(micro_batches):
        batch = to_device(batch, device)
        with grad_sync(model, sync=i == n - 1):
            with autocast(device, amp_dtype):
                loss, metrics = bc_loss(model(batch), batch, cfg)
            (loss / n).backward()
        for k, v in metrics.items():
            totals[k] = totals[k] + v / n if k in totals else v / n
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if grad_clip > 0:
        totals["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, grad_clip).detach()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return totals


@torch.no_grad()
def evaluate(
    *,
    model: BimanualPolicy,
    batches: Iterator[Mapping[str, Any]],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    max_batches: int = 0,
    dist_info: DistInfo = SINGLE_PROCESS,
) -> dict[str, float]:
    """Mean BC loss and metrics over (up to ``max_batches``) validation batches, averaged over ranks."""
    was_training = model.training
    model.eval()
    totals: dict[str, torch.Tensor] = {}
    count = torch.zeros((), device=device)
    for i, batch in enumerate(batches):
        if max_batches and i >= max_batches:
            break
        batch = to_device(batch, device)
        with autocast(device, amp_dtype):
            _, metrics = bc_loss(model(batch), batch, model.cfg)
        for k, v in metrics.items():
            totals[k] = totals.get(k, 0) + v.float()
        count += 1
    model.train(was_training)
    names = sorted(totals)
    packed = torch.stack([totals[k] for k in names] + [count]) if names else count[None]
    packed = all_reduce_sum(packed, dist_info)
    n = float(packed[-1])
    if n == 0:
        return {}
    return {k: float(v) / n for k, v in zip(names, packed[:-1].tolist(), strict=True)}


class BehaviourCloning:
    """The BC algorithm on the engine (see the module docstring)."""

    name = "bc"

    def __init__(self, ctx: Context, *, data: TrainData | None = None) -> None:
        cfg = ctx.cfg
        self.ctx = ctx
        self.cfg = cfg
        # Order matters for resume equivalence: data, network, optimiser, schedule.
        self.data = data if data is not None else build_data(cfg, dist_info=ctx.dist_info, device=ctx.device)  # fmt: skip
        self.tasks = list(self.data.tasks)
        self.model = build_model(cfg, normalization=self.data.normalization).to(ctx.device)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.accum = cfg.trainer.grad_accum_steps
        self.steps_per_epoch = self.data.num_train_batches // self.accum
        if self.steps_per_epoch < 1:
            from teamvla_schema import SchemaError

            raise SchemaError(
                f"the training split gives {self.data.num_train_batches} batch(es) per epoch per rank, fewer than "
                f"trainer.grad_accum_steps={self.accum}: add episodes or lower dataset.batch_size"
            )
        self._total = cfg.trainer.max_steps or cfg.trainer.epochs * self.steps_per_epoch
        self.scheduler = build_scheduler(self.optimizer, cfg.scheduler, total_steps=self._total)
        self.step_model = ctx.wrap(self.model)
        self.epoch = 0  # 0-based epoch in progress
        self.batch_in_epoch = 0  # micro-batches of this epoch already consumed
        self._batches: Iterator[Mapping[str, Any]] | None = None

    # ------------------------------------------------------------------ the engine's interface
    def total_steps(self) -> int:
        """Optimiser steps of the run (``trainer.max_steps``, else ``trainer.epochs`` passes)."""
        return self._total

    def train(self, mode: bool = True) -> None:
        """Training (or evaluation) mode of the network."""
        self.step_model.train(mode)

    def lr(self) -> float:
        """Learning rate of the last step."""
        return float(self.scheduler.get_last_lr()[0])

    def policy_network(self) -> BimanualPolicy:
        """The bare policy (no DDP / compile wrapper)."""
        return self.model

    def train_step(self) -> StepOutput:
        """Fetch ``grad_accum_steps`` micro-batches and take one optimiser step."""
        cfg, ctx = self.cfg, self.ctx
        if self._batches is None:
            batches = self.data.train_batches(epoch=self.epoch, start_batch=self.batch_in_epoch)
            if cfg.trainer.prefetch and not cfg.dataset.num_workers:
                # Only without loader workers: they load ahead already, and forking them (the val
                # loader's, the next epoch's) while our thread is inside numpy could deadlock them.
                batches = Prefetcher(batches, depth=cfg.trainer.prefetch)
            self._batches = batches
        t0 = time.perf_counter()
        micro = [next(self._batches) for _ in range(self.accum)]
        t1 = time.perf_counter()
        metrics = train_step(
            model=self.step_model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            micro_batches=micro,
            device=ctx.device,
            amp_dtype=ctx.amp_dtype,
            grad_clip=cfg.optim.grad_clip,
            loss_cfg=cfg.model,
        )
        self.batch_in_epoch += self.accum
        out = StepOutput(
            metrics=metrics,
            samples=cfg.dataset.batch_size * self.accum * ctx.dist_info.world_size,
            data_time=t1 - t0,
            compute_time=time.perf_counter() - t1,
        )
        if self.batch_in_epoch + self.accum > self.data.num_train_batches:  # the epoch is used up
            self._close_batches()
            self.epoch += 1
            self.batch_in_epoch = 0
            out.epoch_end = True
        return out

    def validate(self) -> dict[str, float]:
        """BC loss on the validation split (empty without one)."""
        batches = self.data.val_batches()
        if batches is None:
            return {}
        ctx = self.ctx
        # Iterating a DataLoader draws its base seed from the global torch RNG; fork it so
        # validation never shifts the training random stream (resume equivalence).
        with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
            return evaluate(
                model=self.model,
                batches=batches,
                device=ctx.device,
                amp_dtype=ctx.amp_dtype,
                max_batches=self.cfg.trainer.val_batches,
                dist_info=ctx.dist_info,
            )

    def checkpoint_state(self) -> dict[str, Any]:
        """Weights, AdamW, schedule, the sampler position, statistics and the policy description."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "training_state": {
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "sampler": {
                    "epoch": self.epoch,
                    "batch_in_epoch": self.batch_in_epoch,
                    "seed": self.cfg.dataset.seed,
                },
                "grad_accum_steps": self.accum,
            },
            "stats": self.data.stats,
            "extra": {
                POLICY_KEY: policy_spec(
                    self.model,
                    normalization=self.data.normalization,
                    image_size=self.data.image_size,
                )
            },
        }

    def load_checkpoint_state(
        self,
        ckpt: Mapping[str, Any],
        *,
        path: Path,
        force: bool,
        changes: Sequence[tuple[str, Any, Any]] = (),
    ) -> None:
        """Weights, optimiser and schedule (hyperparameters from this config), sampler position."""
        weights = state_dict_from_numpy(ckpt["model"])
        check_weights_fit(weights, self.model, changes=changes, path=path)
        self.model.load_state_dict(weights, strict=True)
        restore_optimizer(
            self.optimizer,
            self.scheduler,
            optimizer_state=ckpt["optimizer"],
            scheduler_state=ckpt["scheduler"],
            path=path,
        )
        if force:
            # Keep the weights' normalisation equal to the one saved with the next checkpoints.
            self.model.set_normalization(**self.data.normalization.model_buffers())
        ts = ckpt["training_state"]
        self.epoch = int(ts["epoch"])
        self.batch_in_epoch = int(ts["batch_in_epoch"])
        self._close_batches()

    def set_data(self, ctx: Context, *, stats: NormalizationStats | None = None) -> None:
        """Train on the data of ``ctx.cfg.dataset`` from now on (a new pass starts); keep the
        network and optimiser, and let the network's normalisation follow the new statistics
        (``stats`` if given, else those of the new data)."""
        self._close_batches()
        self.data.close()
        self.ctx, self.cfg = ctx, ctx.cfg
        self.data = build_data(ctx.cfg, dist_info=ctx.dist_info, device=ctx.device, stats=stats)
        self.model.set_normalization(**self.data.normalization.model_buffers())
        self.batch_in_epoch = 0

    def close(self) -> None:
        """Stop the prefetch thread and loader workers."""
        self._close_batches()
        self.data.close()

    def _close_batches(self) -> None:
        if isinstance(self._batches, Prefetcher):
            self._batches.close()
        self._batches = None  # stop loader workers before the next epoch starts its own
