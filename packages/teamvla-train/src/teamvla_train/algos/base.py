"""What an algorithm declares to the engine, and what the engine gives it.

The engine (:mod:`teamvla_train.engine.loop`) owns the run: device and
precision, the process group, the loop with progress and JSONL metrics,
validation and checkpoint cadence, keep-last-K, resume with every RNG. It
knows nothing of losses. An algorithm owns its networks, optimisers, target
networks, data (a dataloader, a replay buffer, an environment) and its update
rule, and hands the engine:

* ``train_step()``: one update, returning detached metric tensors;
* ``validate()``: held-out metrics (may be empty);
* ``checkpoint_state()`` / ``load_checkpoint_state()``: its part of the
  checkpoint (the deployable policy under ``model``, optimisers, schedules,
  target networks, position in its data, anything else it must restore);
* ``policy_network()``: the network :class:`teamvla_train.Policy` deploys.

Algorithms are built by name from the registry in :mod:`teamvla_train.algos`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from teamvla_train.config import TrainConfig
from teamvla_train.engine.device import autocast
from teamvla_train.engine.distributed import DistInfo
from teamvla_train.engine.metrics import MetricsLogger


@dataclass
class Context:
    """What the engine gives an algorithm: where it runs, how, and where it may write."""

    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    dist_info: DistInfo
    amp_dtype: torch.dtype | None  # bf16 autocast, or None for fp32
    logger: MetricsLogger | None = None  # for the algorithm's own events (rank 0 writes)

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` as the update should call it: under DDP when distributed, compiled when asked."""
        wrapped: nn.Module = module
        if self.dist_info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = DistributedDataParallel(module, device_ids=ids)
        if self.cfg.trainer.compile:
            wrapped = torch.compile(wrapped)  # type: ignore[assignment]
        return wrapped

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed-precision context for forward passes (a no-op in fp32)."""
        return autocast(self.device, self.amp_dtype)


@dataclass
class StepOutput:
    """One update's result, as the engine logs it."""

    metrics: dict[str, torch.Tensor]  # detached scalars on the device (no host sync)
    samples: int  # samples (all ranks) the update learned from
    data_time: float = 0.0  # seconds waiting for data
    compute_time: float = 0.0  # seconds computing
    epoch_end: bool = False  # a pass over the algorithm's data ended with this update
    checkpoint: bool = False  # checkpoint now, whatever the cadence (e.g. new data arrived)
    events: list[dict[str, Any]] = field(default_factory=list)  # extra JSONL records


class Algorithm(Protocol):
    """The interface between the engine and an algorithm (see the module docstring)."""

    name: str
    tasks: list[str]  # tasks trained on (the checkpoint directory's name)

    @property
    def epoch(self) -> int:
        """Passes over its data so far (names checkpoints; 0 when meaningless)."""
        ...

    def total_steps(self) -> int:
        """Updates in the whole run."""
        ...

    def train(self, mode: bool = True) -> None:
        """Switch every network to training (or evaluation) mode."""
        ...

    def train_step(self) -> StepOutput:
        """One update."""
        ...

    def validate(self) -> dict[str, float]:
        """Held-out metrics averaged over ranks (empty when there is nothing held out)."""
        ...

    def lr(self) -> float:
        """The learning rate of the main optimiser now (for the logs)."""
        ...

    def policy_network(self) -> nn.Module:
        """The deployable policy network (unwrapped)."""
        ...

    def checkpoint_state(self) -> dict[str, Any]:
        """Checkpoint sections: ``model`` (the policy's weights), ``optimizer``, ``scheduler``,
        ``training_state`` (merged with the engine's), ``stats`` and ``extra`` (merged)."""
        ...

    def load_checkpoint_state(
        self,
        ckpt: Mapping[str, Any],
        *,
        path: Path,
        force: bool,
        changes: Sequence[tuple[str, Any, Any]] = (),
    ) -> None:
        """Restore from a loaded checkpoint; ``changes`` are the config differences the engine accepted."""
        ...

    def close(self) -> None:
        """Release data loaders, environments and worker processes."""
        ...
