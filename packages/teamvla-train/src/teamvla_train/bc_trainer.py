"""Behaviour-cloning trainer: builders, one training step, checkpoints, and the main loop.

Read it top to bottom; the loop in :func:`train` runs in this fixed order::

    setup        config -> device, process group, threads, seeds, data, model,
                 optimiser, schedule, (resume), DDP / compile, logger
    loop         for each optimiser step:
                   fetch grad_accum_steps micro-batches   (timed: data wait)
                   train_step                             (timed: compute)
                   log every trainer.log_every steps      (the only host syncs; a plain
                                                          stderr line when there is no bar)
                   validate every trainer.val_every steps
                   checkpoint every trainer.ckpt_every steps, or at epoch ends
    finish       final validation and checkpoint, TrainResult

Resuming (``resume=PATH`` or ``"auto"``) restores the weights, the optimiser
and schedule, every RNG and the sampler position (epoch, micro-batch within
the epoch), so the continued run computes the same losses as a run that was
never stopped. Distributed runs (``torchrun``) wrap the model in DDP, shard
the data per rank, and only rank 0 writes checkpoints and logs.

``"auto"`` never starts over on top of a run's checkpoints: with a missing or
corrupt ``latest`` pointer it continues from the newest checkpoint that loads,
or refuses (see :func:`teamvla_train.checkpointing.find_resume_point`); a fresh
run into a directory holding checkpoints is refused. The config must match the
checkpoint's except for :data:`RESUME_MAY_DIFFER`, unless
``trainer.resume_force`` is set and every weight keeps its shape.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from teamvla_schema import SchemaError
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
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
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
    """torch intra-op threads per process: this rank's share of the cores, minus one.

    The spare core serves data loading (the prefetch thread, loader workers) and
    whatever else runs. OpenMP threads wait for each other at the end of every
    op, so when one of them is descheduled the whole step stalls: on a busy
    2-core machine a training step with 2 threads took ~20x longer than with 1.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_world_size) - 1)


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Move tensors to ``device`` (asynchronously from pinned memory); lists of strings stay."""
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


# =========================================================================== one step


def _grad_sync(model: nn.Module, *, sync: bool) -> contextlib.AbstractContextManager[Any]:
    """DDP's ``no_sync()`` when gradients should not be all-reduced yet, else a no-op context.

    ``model`` may be DDP itself or a ``torch.compile`` wrapper around it.
    """
    ddp = model if isinstance(model, DistributedDataParallel) else getattr(model, "_orig_mod", None)
    if sync or not isinstance(ddp, DistributedDataParallel):
        return contextlib.nullcontext()
    return ddp.no_sync()


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
        with _grad_sync(model, sync=last):
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


#: Config keys (dotted; a section name covers the whole section) that may differ between a
#: checkpoint and the run resuming from it: where and how fast the run computes and loads data,
#: how long it trains, how often it validates, checkpoints and logs, and evaluation. A difference
#: in any other key refuses the resume unless ``trainer.resume_force`` is set.
RESUME_MAY_DIFFER: tuple[str, ...] = (
    "run.device",
    "run.log_level",
    "run.output_dir",
    "dataset.num_workers",
    "dataset.pin_memory",
    "dataset.persistent_workers",
    "dataset.prefetch_factor",
    "dataset.use_cache",
    "dataset.cache_dir",
    "trainer.max_steps",
    "trainer.epochs",
    "trainer.precision",
    "trainer.compile",
    "trainer.num_threads",
    "trainer.prefetch",
    "trainer.val_every",
    "trainer.val_batches",
    "trainer.ckpt_every",
    "trainer.keep_last",
    "trainer.log_every",
    "trainer.tensorboard",
    "trainer.resume_force",
    "eval",
)

_ABSENT = object()


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"a.b.c": value}`` (lists stay whole values)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _may_differ(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUME_MAY_DIFFER)


def _with_defaults(saved: Mapping[str, Any]) -> Mapping[str, Any]:
    """A checkpoint's config with the defaults of this version filled in (keys added since)."""
    try:
        return resolve_train_config(saved).resolved
    except (SchemaError, ValueError, TypeError):
        return saved  # written by another version that no longer validates: compare as saved


def resume_config_changes(
    saved: Mapping[str, Any], now: Mapping[str, Any]
) -> list[tuple[str, Any, Any]]:
    """``(dotted key, checkpoint value, new value)`` for every key outside :data:`RESUME_MAY_DIFFER` that differs.

    A key missing on one side has the value ``"(absent)"`` there.
    """
    old, new = _flatten(_with_defaults(saved)), _flatten(now)
    changes = []
    for key in sorted(set(old) | set(new)):
        if _may_differ(key):
            continue
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if a != b:
            changes.append(
                (key, "(absent)" if a is _ABSENT else a, "(absent)" if b is _ABSENT else b)
            )
    return changes


def _show(value: Any) -> str:
    if isinstance(value, str) and value == "(absent)":
        return value
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _show_changes(changes: Sequence[tuple[str, Any, Any]]) -> str:
    return ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, a, b in changes)


def _weight_mismatches(saved: Mapping[str, Any], model: nn.Module) -> list[str]:
    """Tensors of ``saved`` that are missing from ``model``, extra, or of another shape."""
    want = model.state_dict()
    out = []
    for k in sorted(set(saved) | set(want)):
        if k not in want:
            out.append(f"{k} (only in the checkpoint)")
        elif k not in saved:
            out.append(f"{k} (not in the checkpoint)")
        elif tuple(saved[k].shape) != tuple(want[k].shape):
            out.append(f"{k} {tuple(saved[k].shape)} -> {tuple(want[k].shape)}")
    return out


#: Optimiser settings that come from this run's config, not from the checkpoint (lr is recomputed).
_CONFIG_HYPERPARAMS = ("initial_lr", "weight_decay", "betas", "eps")


def restore_checkpoint(
    *,
    path: Path,
    model: BimanualPolicy,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    cfg: TrainConfig,
    checkpoint: Mapping[str, Any] | None = None,
) -> TrainState:
    """Load a training checkpoint into ``model``/``optimizer``/``scheduler``; restore RNGs; return the state.

    ``checkpoint`` is the file already loaded (by :func:`teamvla_train.checkpointing.find_resume_point`).
    The config must equal the checkpoint's except for :data:`RESUME_MAY_DIFFER`;
    with ``trainer.resume_force`` other differences are accepted as long as
    every weight keeps its shape. The optimiser's hyperparameters and the
    schedule follow this run's config (so ``trainer.max_steps`` can be raised).
    """
    ckpt = checkpoint if checkpoint is not None else ckpt_io.load_resumable(path)
    force = cfg.trainer.resume_force
    saved_cfg = ckpt.get("config")
    changes = (
        resume_config_changes(saved_cfg, cfg.resolved) if isinstance(saved_cfg, Mapping) else []
    )
    if changes and not force:
        raise SchemaError(
            f"cannot resume: {len(changes)} config key(s) differ from the checkpoint's: "
            f"{_show_changes(changes)}. To continue this run, use its values again; to start "
            "fresh, train into a new run directory (--out DIR, or another run.output_dir) or "
            "delete this one; to resume anyway with the new values, add trainer.resume_force=true "
            "(refused if the model's weight shapes change)",
            path=path,
        )
    weights = state_dict_from_numpy(ckpt["model"])
    mismatches = _weight_mismatches(weights, model)
    if mismatches:
        shown = "; ".join(mismatches[:3]) + (
            f"; and {len(mismatches) - 3} more" if len(mismatches) > 3 else ""
        )
        because = f" ({_show_changes(changes)})" if changes else ""
        raise SchemaError(
            f"cannot resume, not even with trainer.resume_force: the model of this config{because} "
            f"does not fit the checkpoint's weights ({len(mismatches)} tensor(s): {shown}). Start "
            "fresh in a new run directory (--out DIR) or use the checkpoint's model settings",
            path=path,
        )
    if changes:
        log.warning(
            "trainer.resume_force: resuming %s with changed config: %s",
            path,
            _show_changes(changes),
        )
    ts = ckpt["training_state"]
    fresh = [{k: g[k] for k in _CONFIG_HYPERPARAMS if k in g} for g in optimizer.param_groups]
    model.load_state_dict(weights, strict=True)
    try:
        optimizer.load_state_dict(_to_torch_tree(ckpt["optimizer"]))
    except (ValueError, KeyError) as exc:
        raise SchemaError(
            f"cannot resume: the optimiser state does not fit this model ({exc}); start fresh in a "
            "new run directory (--out DIR)",
            path=path,
        ) from None
    scheduler.load_state_dict(ckpt["scheduler"])
    for group, hyper in zip(optimizer.param_groups, fresh, strict=True):
        group.update(hyper)
    if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        # The lr of the next step from this config's schedule (equal to the saved one unless
        # the peak lr, the schedule or the run length changed).
        scheduler.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        for group, base, fn in zip(
            optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
        ):
            group["lr"] = base * fn(scheduler.last_epoch)
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


def _refuse_fresh_over(ckpt_dir: Path, run_dir: Path) -> None:
    """A fresh run would overwrite (and prune) the checkpoints of an earlier one: refuse."""
    files = ckpt_io.checkpoint_files(ckpt_dir)
    if not files and not (ckpt_dir / ckpt_io.LATEST).exists():
        return
    raise SchemaError(
        f"already holds the checkpoints of an earlier run ({len(files)} checkpoint file(s)) and "
        "a fresh run would overwrite them: continue it with --resume auto (resume='auto'), or "
        f"start fresh in a new run directory (--out DIR) or after deleting {run_dir}",
        path=ckpt_dir,
    )


def _find_resume(
    resume: str | os.PathLike[str] | None, run_dir: Path, ckpt_dir: Path
) -> ckpt_io.ResumePoint | None:
    """The checkpoint to continue from (loaded), or None for a fresh start.

    ``"auto"`` continues ``ckpt_dir`` (this run's task directory; else another
    task directory of ``run_dir``), falling back to the newest checkpoint that
    loads when ``latest`` is missing or bad (``setup`` then repairs the pointer).
    """
    if resume is None:
        _refuse_fresh_over(ckpt_dir, run_dir)
        return None
    if str(resume) != "auto":
        path = ckpt_io.resolve_checkpoint(resume)
        return ckpt_io.ResumePoint(path, ckpt_io.load_resumable(path))
    point = ckpt_io.find_resume_point(ckpt_dir)
    if point is None:
        # The run's checkpoints may sit in another task directory (the dataset's tasks changed).
        others = [
            d
            for d in sorted((run_dir / ckpt_io.CHECKPOINT_DIR).glob("*"))
            if d.is_dir() and d.resolve() != ckpt_dir.resolve()
        ]
        found = [p for p in (ckpt_io.find_resume_point(d) for d in others) if p is not None]
        if not found:
            return None  # nothing to resume yet: start fresh
        point = max(
            found,
            key=lambda p: (int(p.checkpoint["training_state"]["step"]), p.path.stat().st_mtime_ns),
        )
    if point.repaired_pointer is not None:
        log.warning(
            "--resume auto: %s; continuing from %s (step %d), the newest checkpoint that loads",
            "; ".join(point.skipped),
            point.path,
            point.repaired_pointer["step"],
        )
    return point


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

    task = ckpt_io.task_dir_name(data.tasks)
    ckpt_dir = run_dir / ckpt_io.CHECKPOINT_DIR / task
    state = TrainState()
    point = _find_resume(resume, run_dir, ckpt_dir)
    resume_path = point.path if point is not None else None
    if point is not None:
        state = restore_checkpoint(
            path=point.path,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            cfg=cfg,
            checkpoint=point.checkpoint,
        )
        if cfg.trainer.resume_force:
            # Keep the weights' normalisation equal to the one saved with the next checkpoints.
            model.set_normalization(**data.normalization.model_buffers())
        if point.repaired_pointer is not None and dist_info.is_main:
            # Only now that the checkpoint is accepted: 'latest' names it again.
            ckpt_io.write_pointer(point.path.parent, point.repaired_pointer)
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

    if dist_info.is_main:
        stale = ckpt_io.remove_stale_temporaries(ckpt_dir)
        if stale:
            log.info("removed unfinished checkpoint writes of killed runs: %s", ", ".join(stale))

    step_model: nn.Module = model
    if dist_info.enabled:
        step_model = DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    if cfg.trainer.compile:
        step_model = torch.compile(step_model)  # type: ignore[assignment]

    logger = MetricsLogger(run_dir, enabled=dist_info.is_main, tensorboard=cfg.trainer.tensorboard)
    session = Session(
        cfg=cfg,
        run_dir=run_dir,
        ckpt_dir=ckpt_dir,
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
    """Rank 0 writes a checkpoint at the current step and updates ``latest`` (keep-last-K).

    A failed write (disk full, quota) raises :class:`~teamvla_train.checkpointing.CheckpointWriteError`
    and leaves the previous checkpoint and pointer as they were (both are written atomically).
    """
    if not s.dist_info.is_main:
        return
    st = s.state
    if end_of_epoch:
        name = ckpt_io.checkpoint_name(epoch=st.epoch)  # st.epoch already counts the finished epoch
    else:
        name = ckpt_io.checkpoint_name(epoch=st.epoch + 1, step=st.step)
    previous = s.last_checkpoint
    # The pointer's history continues only from the checkpoint this run resumed from or wrote.
    parent = (
        previous.name
        if previous is not None and previous.parent.resolve() == s.ckpt_dir.resolve()
        else None
    )
    unchanged = (
        f"the previous checkpoint {previous.name} and the '{ckpt_io.LATEST}' pointer are unchanged"
        if previous is not None
        else f"the '{ckpt_io.LATEST}' pointer is unchanged"
    )
    advice = f"free disk space in {s.ckpt_dir} (or lower trainer.keep_last) and continue with --resume auto"
    try:
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
    except OSError as exc:
        left = ckpt_io.remove_failed_write(s.ckpt_dir, name)
        partial = f"the partial file {left[0]} remains" if left else "no partial file was left"
        raise ckpt_io.CheckpointWriteError(
            f"could not write the checkpoint of step {st.step} ({_os_error(exc)}); {partial}, "
            f"{unchanged}: {advice}",
            path=s.ckpt_dir / name,
        ) from exc
    try:
        ckpt_io.publish_checkpoint(
            s.ckpt_dir,
            name,
            step=st.step,
            epoch=st.epoch,
            keep_last=s.cfg.trainer.keep_last,
            parent=parent,
        )
    except OSError as exc:
        ckpt_io.remove_failed_write(s.ckpt_dir, ckpt_io.LATEST)
        raise ckpt_io.CheckpointWriteError(
            f"wrote {name} but could not update the '{ckpt_io.LATEST}' pointer ({_os_error(exc)}); "
            f"{unchanged}: {advice}",
            path=s.ckpt_dir / ckpt_io.LATEST,
        ) from exc
    s.last_checkpoint = path


def _os_error(exc: OSError) -> str:
    """``No space left on device [ENOSPC]``."""
    code = errno.errorcode.get(exc.errno or 0)
    return f"{exc.strerror or exc}" + (f" [{code}]" if code else "")


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


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _duration(seconds: float) -> str:
    """``1h02m``, ``4m05s``, ``12s``."""
    if not math.isfinite(seconds):
        return "?"
    total = round(max(0.0, seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class _ProgressLines:
    """Plain progress lines on stderr, for logs and CI: step/total, loss, steps/s and ETA."""

    def __init__(self, total_steps: int, start_step: int) -> None:
        self.total = total_steps
        self.start_step = start_step
        self.started = time.perf_counter()

    def train(self, step: int, epoch: int, metrics: Mapping[str, float]) -> None:
        elapsed = time.perf_counter() - self.started
        rate = (step - self.start_step) / elapsed if elapsed > 0 else float("nan")
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        self._print(
            f"step {step}/{self.total} ({100.0 * step / max(1, self.total):.0f}%)  epoch {epoch + 1}  "
            f"loss {metrics.get('loss', float('nan')):.4f}  {rate:.2f} steps/s  eta {_duration(eta)}"
        )

    def val(self, step: int, metrics: Mapping[str, float]) -> None:
        if metrics:
            self._print(
                f"step {step}/{self.total}  val_loss {metrics.get('loss', float('nan')):.4f}"
            )

    @staticmethod
    def _print(line: str) -> None:
        print(line, file=sys.stderr, flush=True)


# =========================================================================== main loop


def run_training(s: Session, *, progress: bool = True) -> TrainResult:
    """The main loop over optimiser steps (see the module docstring for the order)."""
    cfg, st = s.cfg, s.state
    accum = cfg.trainer.grad_accum_steps
    samples_per_step = cfg.dataset.batch_size * accum * s.dist_info.world_size
    # A bar only on a terminal; otherwise (--no-progress, logs, CI) one plain line per log interval.
    show_bar = progress and s.dist_info.is_main and _is_terminal(sys.stderr)
    lines = _ProgressLines(s.total_steps, st.step) if s.dist_info.is_main and not show_bar else None
    bar = tqdm(
        total=s.total_steps,
        initial=st.step,
        disable=not show_bar,
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
        if cfg.trainer.prefetch and not cfg.dataset.num_workers:
            # Only without loader workers: they load ahead already, and forking them (the val
            # loader's, the next epoch's) while our thread is inside numpy could deadlock them.
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
                if lines is not None:
                    lines.train(st.step, st.epoch, last_train)
            if (
                cfg.trainer.val_every
                and st.step % cfg.trainer.val_every == 0
                and st.step < s.total_steps
            ):
                last_val = _validate(s)
                if lines is not None:
                    lines.val(st.step, last_val)
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
    final_val = _validate(s)
    if lines is not None:
        lines.val(st.step, final_val)
    last_val = final_val or last_val
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
    ``"auto"`` (continue ``run_dir`` if it has a checkpoint; without ``resume``
    a ``run_dir`` holding checkpoints is refused). ``data`` replaces the
    dataset loaders (tests and benchmarks use synthetic data). ``progress``
    draws a bar when stderr is a terminal; otherwise a plain line is printed
    every ``trainer.log_every`` steps.
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
