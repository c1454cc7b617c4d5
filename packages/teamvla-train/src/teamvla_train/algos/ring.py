"""Fixed-capacity arrays filled as a ring: what both replay buffers share.

:class:`RingArrays` holds one preallocated array per field (``capacity`` rows),
writes batches at the ring position (the oldest rows are overwritten once
full), and turns its counters and filled rows into checkpoint state and back,
checking the shapes and dtypes. :class:`~teamvla_train.algos.replay.ReplayBuffer`
(state vectors) and :class:`~teamvla_train.algos.pixel_replay.PixelReplayBuffer`
(uint8 images) add their fields and what a transition means.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


class RingArrays:
    """``capacity`` rows of each field in ``shapes`` (``name -> (row shape, dtype)``)."""

    def __init__(self, capacity: int, shapes: Mapping[str, tuple[tuple[int, ...], Any]]) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, received {capacity}")
        self.capacity = capacity
        # (C, ...) each; np.zeros maps untouched pages lazily, so an unfilled ring costs nothing
        self.arrays = {k: np.zeros((capacity, *shape), dtype) for k, (shape, dtype) in shapes.items()}  # fmt: skip
        self.pos = 0  # the row the next row goes to
        self.size = 0  # rows filled
        self.added = 0  # rows ever added

    def __len__(self) -> int:
        return self.size

    def write(self, values: Mapping[str, Any]) -> None:
        """Append the ``n`` rows of ``values`` (every field, leading axis ``n``)."""
        n = len(next(iter(values.values())))
        if n > self.capacity:  # only the newest capacity rows survive
            values = {k: np.asarray(v)[n - self.capacity :] for k, v in values.items()}
            self.added += n - self.capacity
            n = self.capacity
        rows = (self.pos + np.arange(n)) % self.capacity
        for key, value in values.items():
            self.arrays[key][rows] = value
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        self.added += n

    def draw(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` filled rows drawn uniformly with replacement, every field."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = rng.integers(0, self.size, size=n)
        return {key: arr[idx] for key, arr in self.arrays.items()}

    def state_dict(self) -> dict[str, Any]:
        """Counters and the filled rows (numpy arrays) for a checkpoint."""
        state: dict[str, Any] = {
            "capacity": self.capacity, "pos": self.pos, "size": self.size, "added": self.added,
        }  # fmt: skip
        state.update({key: arr[: self.size].copy() for key, arr in self.arrays.items()})
        return state

    def load_state_dict(
        self, state: Mapping[str, Any], *, defaults: Mapping[str, float] | None = None
    ) -> None:
        """Restore :meth:`state_dict`; the capacity and the row shapes and dtypes must match.
        A field missing from ``state`` takes its value in ``defaults`` (older checkpoints)."""
        if int(state["capacity"]) != self.capacity:
            raise ValueError(
                f"replay capacity {state['capacity']} in the checkpoint, {self.capacity} configured"
            )
        size = int(state["size"])
        for key, target in self.arrays.items():
            if key not in state and defaults is not None and key in defaults:
                target[:] = defaults[key]
                continue
            value = np.asarray(state[key])
            if value.shape != (size, *target.shape[1:]) or value.dtype != target.dtype:
                raise ValueError(
                    f"replay {key}: {value.dtype} {value.shape} in the checkpoint, expected "
                    f"{target.dtype} {(size, *target.shape[1:])}"
                )
            target[:size] = value
            target[size:] = 0
        self.pos, self.size, self.added = int(state["pos"]), size, int(state["added"])
