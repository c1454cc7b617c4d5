"""torch.distributed set-up for runs launched with ``torchrun`` (one process per GPU or CPU slot)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job; ``world_size == 1`` means not distributed."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    owns_group: bool = False  # this code created the process group (and so destroys it)

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """The process that writes checkpoints and logs."""
        return self.rank == 0


#: The default: one process, no process group.
SINGLE_PROCESS = DistInfo()


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group described by torchrun's environment variables (no-op without them).

    Backend: NCCL for CUDA, gloo for CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    owns = not dist.is_initialized()
    info = DistInfo(
        rank=int(os.environ["RANK"]),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        world_size=world_size,
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size))),
        owns_group=owns,
    )
    if owns:
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def shutdown_distributed(info: DistInfo) -> None:
    """Leave the process group if :func:`init_distributed` created it."""
    if info.owns_group and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over all processes (in place; identity when not distributed)."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(info: DistInfo) -> None:
    """Wait until every process arrives (no-op when not distributed)."""
    if info.enabled:
        dist.barrier()


def broadcast_(tensor: torch.Tensor, info: DistInfo, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` with process ``src``'s (in place; identity when not distributed)."""
    if info.enabled:
        dist.broadcast(tensor, src=src)
    return tensor
