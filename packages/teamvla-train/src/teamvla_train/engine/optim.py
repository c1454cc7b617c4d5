"""Optimisers and learning-rate schedules shared by the algorithms, and restoring them on resume."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from teamvla_schema import SchemaError
from torch import nn

from teamvla_train.config import OptimConfig, SchedulerConfig


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


def to_torch_tree(obj: Any) -> Any:
    """Checkpoint arrays back to tensors, recursively (for optimiser state)."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj, copy=True))
    if isinstance(obj, dict):
        return {k: to_torch_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_torch_tree(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_torch_tree(v) for v in obj)
    return obj


#: Optimiser settings that come from this run's config, not from the checkpoint (lr is recomputed).
_CONFIG_HYPERPARAMS = ("initial_lr", "weight_decay", "betas", "eps")


def restore_optimizer(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    *,
    optimizer_state: Mapping[str, Any],
    scheduler_state: Mapping[str, Any] | None,
    path: Path,
) -> None:
    """Load a checkpoint's optimiser (and schedule) state; hyperparameters and lr follow this run's config.

    So ``trainer.max_steps`` or the peak lr can change on resume: the next
    step's lr comes from this config's schedule at the restored step.
    """
    fresh = [{k: g[k] for k in _CONFIG_HYPERPARAMS if k in g} for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(to_torch_tree(optimizer_state))
    except (ValueError, KeyError) as exc:
        raise SchemaError(
            f"cannot resume: the optimiser state does not fit this model ({exc}); start fresh in a "
            "new run directory (--out DIR)",
            path=path,
        ) from None
    if scheduler is not None and scheduler_state is not None:
        scheduler.load_state_dict(dict(scheduler_state))
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
