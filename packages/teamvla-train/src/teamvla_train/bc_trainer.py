"""Behaviour-cloning trainer: builders, one training step, checkpoints, and the main loop.

Read it top to bottom; the loop in :func:`train` runs in this fixed order::

    setup        config -> device, process group, threads, seeds, data, model,
                 optimiser, schedule, (resume), DDP / compile, logger
    loop         for each optimiser step:
                   fetch grad_accum_steps micro-batches   (timed: data wait)
                   train_step                             (timed: compute)
                   log every trainer.log_every steps      (the only host syncs)
                   validate every trainer.val_every steps
                   checkpoint every trainer.ckpt_every steps, or at epoch ends
    finish       final validation and checkpoint, TrainResult

Resuming (``resume=PATH`` or ``"auto"``) restores the weights, the optimiser
and schedule, every RNG and the sampler position (epoch, micro-batch within
the epoch), so the continued run computes the same losses as a run that was
never stopped. Distributed runs (``torchrun``) wrap the model in DDP, shard
the data per rank, and only rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from teamvla_schema import SchemaError, load_checkpoint
from teamvla_schema import save_checkpoint as schema_save_checkpoint
from teamvla_schema.config import LoadedConfig, save_resolved_config
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from teamvla_train import checkpointing as ckpt_io
from teamvla_train.config import OptimConfig, SchedulerConfig, TrainConfig, resolve_train_config
from teamvla_train.data import TrainData, build_train_data
from teamvla_train.distributed import (
    SINGLE_PROCESS,
    DistInfo,
    all_reduce_sum,
    init_distributed,
    shutdown_distributed,
)
from teamvla_train.metrics import MetricsLogger
from teamvla_train.models import BimanualPolicy, make_model
from teamvla_train.normalization import Affine
from teamvla_train.policy import POLICY_KEY, policy_spec, state_dict_from_numpy
from teamvla_train.prefetch import Prefetcher

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"


# =========================================================================== builders


def build_model(cfg: TrainConfig, *, normalization: Affine | None = None) -> BimanualPolicy:
    """The policy named by ``cfg.model.name``, sized for the dataset's windows."""
    model = make_model(
        cfg.model, obs_history=cfg.dataset.obs_history, action_horizon=cfg.dataset.action_horizon
    )
    if normalization is not None:
        model.set_normalization(**normalization.model_buffers())
    return model


def build_data(
    cfg: TrainConfig, *, dist_info: DistInfo = SINGLE_PROCESS, device: torch.device | None = None
) -> TrainData:
    """Train/val loaders for this rank, plus statistics and normalisation (see :mod:`teamvla_train.data`)."""
    return build_train_data(
        cfg, dist_info=dist_info, pin_memory=device is not None and device.type == "cuda"
    )


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on conv/linear weights only (not biases, norms, embeddings)."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            wants_decay = name == "weight" and isinstance(module, nn.Linear | nn.Conv2d)
            (decay if wants_decay else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.betas[0], cfg.betas[1]), eps=cfg.eps)


def lr_multiplier(step: int, *, cfg: SchedulerConfig, total_steps: int) -> float:
    """Fraction of the peak lr used for optimiser step ``step`` (0-based).

    Linear warm-up reaching 1 at step ``warmup_steps - 1``, then cosine decay to
    ``min_lr_ratio`` at the last step (or constant 1).
    """
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.name == "constant":
        return 1.0
    span = max(1, total_steps - 1 - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, *, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up + cosine (or constant) :class:`~torch.optim.lr_scheduler.LambdaLR`, stepped per optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, cfg=cfg, total_steps=total_steps)
    )


# =========================================================================== device, seeds, precision


def resolve_device(requested: str, dist_info: DistInfo) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; a distributed CUDA run uses ``cuda:<local_rank>``."""
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SchemaError(
                f"device {requested!r} requested but CUDA is not available (use --device cpu)"
            )
        if dist_info.enabled:
            device = torch.device("cuda", dist_info.local_rank)
        elif device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            raise SchemaError(
                f"device {requested!r}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
    elif device.type != "cpu":
        raise SchemaError(f"unsupported device {requested!r} (expected cpu, cuda or cuda:N)")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA (``auto``/``bf16``), on CPU only when ``bf16`` is asked; else None."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """The autocast context for ``dtype`` (a no-op context when None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def default_num_threads(local_world_size: int = 1) -> int:
    """CPU cores available to this process, shared among the local ranks."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_world_size))


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Move tensors to ``device`` (asynchronously from pinned memory); lists of strings stay."""
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


# =========================================================================== one step


def train_step(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    micro_batches: Sequence[Mapping[str, Any]],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    grad_clip: float = 0.0,
) -> dict[str, torch.Tensor]:
    """One optimiser step over ``micro_batches`` (gradient accumulation); returns detached metrics.

    The loss of each micro-batch is divided by their number, so the gradient
    equals that of one batch of all their samples. Under DDP, gradients are
    all-reduced once, on the last micro-batch. No host synchronisation here:
    the metrics stay tensors on ``device``.
    """
    n = len(micro_batches)
    totals: dict[str, torch.Tensor] = {}
    for i, batch in enumerate(micro_batches):
        batch = to_device(batch, device)
        last = i == n - 1
        sync = (
            contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        )
        with sync:
            with autocast(device, amp_dtype):
                loss, metrics = model(batch)
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
    """Mean loss and metrics over (up to ``max_batches``) validation batches, averaged over ranks."""
    was_training = model.training
    model.eval()
    totals: dict[str, torch.Tensor] = {}
    count = torch.zeros((), device=device)
    for i, batch in enumerate(batches):
        if max_batches and i >= max_batches:
            break
        with autocast(device, amp_dtype):
            _, metrics = model(to_device(batch, device))
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


# =========================================================================== training state and checkpoints


@dataclass
class TrainState:
    """Where the run is: optimiser steps done, and the sampler position of the next micro-batch."""

    step: int = 0
    epoch: int = 0  # 0-based epoch in progress
    batch_in_epoch: int = 0  # micro-batches of this epoch already consumed
    samples: int = 0  # samples trained on, all ranks together

    def to_dict(self) -> dict[str, int]:
        """Plain dict for the checkpoint."""
        return dataclasses.asdict(self)


def _unwrap(model: nn.Module) -> BimanualPolicy:
    """The bare policy under DDP / torch.compile wrappers."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model  # type: ignore[return-value]


def save_checkpoint(
    *,
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: TrainState,
    cfg: TrainConfig,
    data: TrainData,
    metrics: Mapping[str, float] | None = None,
) -> Path:
    """Write a full training checkpoint (weights, optimiser, schedule, state with RNGs, config, stats).

    The file is a teamvla-schema checkpoint: it loads with
    :func:`teamvla_train.policy.load_policy` and, without torch, with
    :func:`teamvla_schema.load_checkpoint`.
    """
    bare = _unwrap(model)
    training_state = {
        **state.to_dict(),
        "rng": ckpt_io.capture_rng_state(),
        "sampler": {
            "epoch": state.epoch,
            "batch_in_epoch": state.batch_in_epoch,
            "seed": cfg.dataset.seed,
        },
        "grad_accum_steps": cfg.trainer.grad_accum_steps,
    }
    extra = {
        POLICY_KEY: policy_spec(bare, normalization=data.normalization, image_size=data.image_size),
        "task": ckpt_io.task_dir_name(data.tasks),
        "tasks": list(data.tasks),
        "metrics": dict(metrics or {}),
        "torch_version": torch.__version__,
    }
    return schema_save_checkpoint(
        path,
        model=bare.state_dict(),
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        training_state=training_state,
        config=cfg.resolved,
        stats=data.stats,
        extra=extra,
    )


def _to_torch_tree(obj: Any) -> Any:
    """Checkpoint arrays back to tensors, recursively (for optimiser state)."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj, copy=True))
    if isinstance(obj, dict):
        return {k: _to_torch_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_torch_tree(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_torch_tree(v) for v in obj)
    return obj


def restore_checkpoint(
    *,
    path: Path,
    model: BimanualPolicy,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    cfg: TrainConfig,
) -> TrainState:
    """Load a training checkpoint into ``model``/``optimizer``/``scheduler``; restore RNGs; return the state."""
    ckpt = load_checkpoint(path)
    for key in ("optimizer", "scheduler", "training_state"):
        if key not in ckpt:
            raise SchemaError(
                f"not a resumable training checkpoint (no '{key}' section)", path=path
            )
    saved_model = (ckpt.get("config") or {}).get("model")
    now_model = cfg.resolved.get("model")
    if saved_model is not None and saved_model != now_model:
        changed = sorted(
            k
            for k in set(saved_model) | set(now_model or {})
            if saved_model.get(k) != (now_model or {}).get(k)
        )
        raise SchemaError(
            f"cannot resume: the model config differs from the checkpoint's in {changed}", path=path
        )
    ts = ckpt["training_state"]
    if int(ts.get("grad_accum_steps", 1)) != cfg.trainer.grad_accum_steps:
        raise SchemaError(
            f"cannot resume: trainer.grad_accum_steps is {cfg.trainer.grad_accum_steps}, "
            f"the checkpoint used {ts.get('grad_accum_steps')}",
            path=path,
        )
    model.load_state_dict(state_dict_from_numpy(ckpt["model"]), strict=True)
    optimizer.load_state_dict(_to_torch_tree(ckpt["optimizer"]))
    scheduler.load_state_dict(ckpt["scheduler"])
    ckpt_io.restore_rng_state(ts["rng"])
    return TrainState(
        step=int(ts["step"]),
        epoch=int(ts["epoch"]),
        batch_in_epoch=int(ts["batch_in_epoch"]),
        samples=int(ts["samples"]),
    )


# =========================================================================== setup


@dataclass
class Session:
    """Everything a run holds, built by :func:`setup` (composition; no trainer class hierarchy)."""

    cfg: TrainConfig
    run_dir: Path
    ckpt_dir: Path
    device: torch.device
    dist_info: DistInfo
    amp_dtype: torch.dtype | None
    data: TrainData
    model: BimanualPolicy  # the bare policy
    step_model: nn.Module  # what train_step calls: DDP and/or compiled wrapper of ``model``
    optimizer: torch.optim.AdamW
    scheduler: torch.optim.lr_scheduler.LambdaLR
    state: TrainState
    total_steps: int
    steps_per_epoch: int
    logger: MetricsLogger
    last_checkpoint: Path | None = None


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    run_dir: Path
    last_checkpoint: Path | None
    final_metrics: dict[str, float] = field(default_factory=dict)
    steps: int = 0


def _find_resume(resume: str | os.PathLike[str] | None, run_dir: Path) -> Path | None:
    if resume is None:
        return None
    if str(resume) == "auto":
        try:
            return ckpt_io.resolve_checkpoint(run_dir)
        except SchemaError:
            return None  # nothing to resume yet: start fresh
    return ckpt_io.resolve_checkpoint(resume)


def setup(
    cfg: TrainConfig,
    *,
    run_dir: Path,
    device: str | None = None,
    resume: str | os.PathLike[str] | None = None,
    data: TrainData | None = None,
) -> Session:
    """Build the whole training session in a fixed order (see the module docstring)."""
    requested = device or cfg.run.device
    try:
        device_type = torch.device(requested).type
    except RuntimeError:
        raise SchemaError(f"unknown device {requested!r} (expected cpu, cuda or cuda:N)") from None
    if device_type == "cuda" and not torch.cuda.is_available():
        raise SchemaError(
            f"device {requested!r} requested but CUDA is not available (use --device cpu)"
        )
    dist_info = init_distributed(device_type)
    dev = resolve_device(requested, dist_info)
    if dev.type == "cpu":
        torch.set_num_threads(
            cfg.trainer.num_threads or default_num_threads(dist_info.local_world_size)
        )
    seed_everything(cfg.run.seed + dist_info.rank)

    if data is None:
        data = build_data(cfg, dist_info=dist_info, device=dev)
    model = build_model(cfg, normalization=data.normalization).to(dev)
    optimizer = build_optimizer(model, cfg.optim)
    steps_per_epoch = data.num_train_batches // cfg.trainer.grad_accum_steps
    if steps_per_epoch < 1:
        raise SchemaError(
            f"the training split gives {data.num_train_batches} batch(es) per epoch per rank, fewer than "
            f"trainer.grad_accum_steps={cfg.trainer.grad_accum_steps}: add episodes or lower dataset.batch_size"
        )
    total_steps = cfg.trainer.max_steps or cfg.trainer.epochs * steps_per_epoch
    scheduler = build_scheduler(optimizer, cfg.scheduler, total_steps=total_steps)

    state = TrainState()
    resume_path = _find_resume(resume, run_dir)
    if resume_path is not None:
        state = restore_checkpoint(
            path=resume_path, model=model, optimizer=optimizer, scheduler=scheduler, cfg=cfg
        )
        if dist_info.rank:
            # Each rank continues with its own stream (rank 0's state was saved).
            torch.manual_seed(cfg.run.seed + dist_info.rank + 1_000_003 * state.step)
        log.info(
            "resumed from %s at step %d (epoch %d, batch %d)",
            resume_path,
            state.step,
            state.epoch,
            state.batch_in_epoch,
        )

    step_model: nn.Module = model
    if dist_info.enabled:
        step_model = DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    if cfg.trainer.compile:
        step_model = torch.compile(step_model)  # type: ignore[assignment]

    task = ckpt_io.task_dir_name(data.tasks)
    logger = MetricsLogger(run_dir, enabled=dist_info.is_main, tensorboard=cfg.trainer.tensorboard)
    session = Session(
        cfg=cfg,
        run_dir=run_dir,
        ckpt_dir=run_dir / ckpt_io.CHECKPOINT_DIR / task,
        device=dev,
        dist_info=dist_info,
        amp_dtype=autocast_dtype(cfg.trainer.precision, dev),
        data=data,
        model=model,
        step_model=step_model,
        optimizer=optimizer,
        scheduler=scheduler,
        state=state,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        logger=logger,
        last_checkpoint=resume_path,
    )
    if dist_info.is_main:
        logger.write(
            {
                "event": "resume" if resume_path else "start",
                "step": state.step,
                "checkpoint": str(resume_path) if resume_path else None,
                "model": cfg.model.name,
                "parameters": model.num_parameters(),
                "device": str(dev),
                "world_size": dist_info.world_size,
                "total_steps": total_steps,
                "steps_per_epoch": steps_per_epoch,
            }
        )
    return session


# =========================================================================== loop helpers


def _checkpoint(
    s: Session, *, end_of_epoch: bool, metrics: Mapping[str, float] | None = None
) -> None:
    """Rank 0 writes a checkpoint at the current step and updates ``latest`` (keep-last-K)."""
    if not s.dist_info.is_main:
        return
    st = s.state
    if end_of_epoch:
        name = ckpt_io.checkpoint_name(epoch=st.epoch)  # st.epoch already counts the finished epoch
    else:
        name = ckpt_io.checkpoint_name(epoch=st.epoch + 1, step=st.step)
    path = save_checkpoint(
        path=s.ckpt_dir / name,
        model=s.model,
        optimizer=s.optimizer,
        scheduler=s.scheduler,
        state=st,
        cfg=s.cfg,
        data=s.data,
        metrics=metrics,
    )
    ckpt_io.publish_checkpoint(
        s.ckpt_dir, name, step=st.step, epoch=st.epoch, keep_last=s.cfg.trainer.keep_last
    )
    s.last_checkpoint = path


def _validate(s: Session) -> dict[str, float]:
    """Validation metrics (empty when there is no held-out split); logged by rank 0."""
    batches = s.data.val_batches()
    if batches is None:
        return {}
    # Iterating a DataLoader draws its base seed from the global torch RNG; fork it so
    # validation never shifts the training random stream (resume equivalence).
    with torch.random.fork_rng(devices=[s.device] if s.device.type == "cuda" else []):
        out = evaluate(
            model=s.model,
            batches=batches,
            device=s.device,
            amp_dtype=s.amp_dtype,
            max_batches=s.cfg.trainer.val_batches,
            dist_info=s.dist_info,
        )
    if out:
        s.logger.write({"split": "val", "step": s.state.step, "epoch": s.state.epoch, **out})
    return out


class _Interval:
    """Sums per-step metric tensors on the device between log lines (no host syncs)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.samples = 0
        self.data_time = 0.0
        self.compute_time = 0.0
        self.started = time.perf_counter()

    def add(
        self,
        metrics: Mapping[str, torch.Tensor],
        *,
        samples: int,
        data_time: float,
        compute_time: float,
    ) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.steps += 1
        self.samples += samples
        self.data_time += data_time
        self.compute_time += compute_time

    def summary(self, dist_info: DistInfo) -> dict[str, float]:
        names = sorted(self.sums)
        packed = torch.stack([self.sums[k].float() for k in names])
        if dist_info.enabled:
            packed = all_reduce_sum(packed, dist_info) / dist_info.world_size
        values = packed.tolist()  # the one host sync of the interval
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        out = {k: v / self.steps for k, v in zip(names, values, strict=True)}
        out.update(
            samples_per_s=self.samples / elapsed,
            steps_per_s=self.steps / elapsed,
            data_time=self.data_time / self.steps,
            compute_time=self.compute_time / self.steps,
            data_frac=self.data_time / max(self.data_time + self.compute_time, 1e-9),
        )
        return out


# =========================================================================== main loop


def run_training(s: Session, *, progress: bool = True) -> TrainResult:
    """The main loop over optimiser steps (see the module docstring for the order)."""
    cfg, st = s.cfg, s.state
    accum = cfg.trainer.grad_accum_steps
    samples_per_step = cfg.dataset.batch_size * accum * s.dist_info.world_size
    bar = tqdm(
        total=s.total_steps,
        initial=st.step,
        disable=not (progress and s.dist_info.is_main),
        unit="step",
        dynamic_ncols=True,
    )
    interval = _Interval()
    last_train: dict[str, float] = {}
    last_val: dict[str, float] = {}
    checkpointed_at = st.step if s.last_checkpoint is not None else -1
    s.step_model.train()
    while st.step < s.total_steps:
        batches = s.data.train_batches(epoch=st.epoch, start_batch=st.batch_in_epoch)
        if cfg.trainer.prefetch:
            batches = Prefetcher(batches, depth=cfg.trainer.prefetch)
        while st.step < s.total_steps and st.batch_in_epoch + accum <= s.data.num_train_batches:
            t0 = time.perf_counter()
            micro = [next(batches) for _ in range(accum)]
            t1 = time.perf_counter()
            metrics = train_step(
                model=s.step_model,
                optimizer=s.optimizer,
                scheduler=s.scheduler,
                micro_batches=micro,
                device=s.device,
                amp_dtype=s.amp_dtype,
                grad_clip=cfg.optim.grad_clip,
            )
            st.step += 1
            st.batch_in_epoch += accum
            st.samples += samples_per_step
            interval.add(
                metrics,
                samples=samples_per_step,
                data_time=t1 - t0,
                compute_time=time.perf_counter() - t1,
            )
            bar.update(1)

            if st.step % cfg.trainer.log_every == 0 or st.step == s.total_steps:
                last_train = interval.summary(s.dist_info)
                interval.reset()
                record = {
                    "split": "train",
                    "step": st.step,
                    "epoch": st.epoch,
                    "lr": s.scheduler.get_last_lr()[0],
                }
                s.logger.write({**record, **last_train})
                bar.set_postfix(
                    loss=f"{last_train['loss']:.4f}", sps=f"{last_train['samples_per_s']:.0f}"
                )
            if (
                cfg.trainer.val_every
                and st.step % cfg.trainer.val_every == 0
                and st.step < s.total_steps
            ):
                last_val = _validate(s)
            if cfg.trainer.ckpt_every and st.step % cfg.trainer.ckpt_every == 0:
                _checkpoint(s, end_of_epoch=False, metrics=_final_metrics(last_train, last_val))
                checkpointed_at = st.step
        if isinstance(batches, Prefetcher):
            batches.close()
        del batches  # stop loader workers before the next epoch starts its own
        if st.batch_in_epoch + accum > s.data.num_train_batches:  # the epoch is used up
            st.epoch += 1
            st.batch_in_epoch = 0
            if not cfg.trainer.ckpt_every:
                _checkpoint(s, end_of_epoch=True, metrics=_final_metrics(last_train, last_val))
                checkpointed_at = st.step
    bar.close()
    last_val = _validate(s) or last_val
    final = _final_metrics(last_train, last_val)
    if checkpointed_at != st.step:
        _checkpoint(s, end_of_epoch=False, metrics=final)
    if s.dist_info.is_main:
        s.logger.write(
            {"event": "end", "step": st.step, "checkpoint": str(s.last_checkpoint), **final}
        )
    s.logger.close()
    return TrainResult(
        run_dir=s.run_dir, last_checkpoint=s.last_checkpoint, final_metrics=final, steps=st.step
    )


def _final_metrics(train: Mapping[str, float], val: Mapping[str, float]) -> dict[str, float]:
    out = {f"train_{k}": v for k, v in train.items()}
    out.update({f"val_{k}": v for k, v in val.items()})
    return out


def train(
    cfg: TrainConfig | LoadedConfig | Mapping[str, Any],
    *,
    run_dir: str | os.PathLike[str],
    device: str | None = None,
    resume: str | os.PathLike[str] | None = None,
    progress: bool = True,
    data: TrainData | None = None,
) -> TrainResult:
    """Train a policy; the Python entry point behind ``teamvla train``.

    ``cfg`` is a loaded config file, its plain mapping, or a validated
    :class:`TrainConfig`; it is validated completely before any work. The
    resolved config is saved as ``<run_dir>/config.yaml``. ``device`` overrides
    ``run.device``; ``resume`` is a checkpoint / run directory path or
    ``"auto"`` (continue ``run_dir`` if it has a checkpoint). ``data`` replaces
    the dataset loaders (tests and benchmarks use synthetic data).
    """
    train_cfg = resolve_train_config(cfg)
    run_path = Path(run_dir)
    session = setup(train_cfg, run_dir=run_path, device=device, resume=resume, data=data)
    try:
        if session.dist_info.is_main:
            save_resolved_config(run_path / CONFIG_FILE, train_cfg.resolved)
        return run_training(session, progress=progress)
    finally:
        session.data.close()
        shutdown_distributed(session.dist_info)
