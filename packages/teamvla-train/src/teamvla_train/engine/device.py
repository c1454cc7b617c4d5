"""Where and how a run computes: device choice, seeds, mixed precision, CPU threads, wrappers."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from teamvla_schema import SchemaError
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from teamvla_train.engine.distributed import DistInfo


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


def grad_sync(model: nn.Module, *, sync: bool) -> contextlib.AbstractContextManager[Any]:
    """DDP's ``no_sync()`` when gradients should not be all-reduced yet, else a no-op context.

    ``model`` may be DDP itself or a ``torch.compile`` wrapper around it.
    """
    ddp = model if isinstance(model, DistributedDataParallel) else getattr(model, "_orig_mod", None)
    if sync or not isinstance(ddp, DistributedDataParallel):
        return contextlib.nullcontext()
    return ddp.no_sync()


def unwrap(model: nn.Module) -> nn.Module:
    """The bare policy under DDP / torch.compile wrappers."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model
