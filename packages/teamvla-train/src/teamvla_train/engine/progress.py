"""Progress on the terminal and in logs: metric sums per log interval, plain progress lines."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from typing import Any

import torch

from teamvla_train.engine.distributed import DistInfo, all_reduce_sum


class Interval:
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


def is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def duration(seconds: float) -> str:
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


class ProgressLines:
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
            f"loss {metrics.get('loss', float('nan')):.4f}  {rate:.2f} steps/s  eta {duration(eta)}"
        )

    def val(self, step: int, metrics: Mapping[str, float]) -> None:
        if metrics:
            self._print(
                f"step {step}/{self.total}  val_loss {metrics.get('loss', float('nan')):.4f}"
            )

    @staticmethod
    def _print(line: str) -> None:
        print(line, file=sys.stderr, flush=True)
