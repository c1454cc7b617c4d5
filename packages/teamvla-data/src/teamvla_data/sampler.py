"""Epoch-based batch sampling: seeded, shardable across ranks, resumable. numpy only.

The order of an epoch is a pure function of (seed, epoch) and the dataset, so
it is the same whatever the number of workers, and every rank computes the
same global order and takes its own disjoint share of it:

1. the epoch's global sample order: ``proportional`` weighting is a seeded
   permutation (or ``0..n-1`` without shuffling); ``uniform`` / ``explicit``
   draw each position's task with those weights, then walk a seeded
   permutation of that task's samples (reshuffled whenever it runs out);
2. distributed: the order is cut to a multiple of ``world_size``
   (``drop_last``) or padded by repeating its start, and rank ``r`` takes
   positions ``r, r + world_size, ...``; the union over ranks is the epoch;
3. the rank's share is cut into batches (the last one dropped if short and
   ``drop_last``).

The sampler yields :class:`IndexBatch` lists, which carry the epoch so that
random transforms in (persistent) workers know it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

WEIGHTINGS = ("proportional", "uniform", "explicit")


class IndexBatch(list[int]):
    """A batch of sample indices that knows its epoch (and the loader pass it belongs to)."""

    epoch: int
    iteration: int

    def __init__(self, indices: Sequence[int], epoch: int, iteration: int = 0) -> None:
        super().__init__(indices)
        self.epoch = epoch
        self.iteration = iteration

    def __reduce__(self) -> Any:
        # Sent to worker processes through torch's queues: keep it a plain-data round trip.
        return (IndexBatch, (list(self), self.epoch, self.iteration))


class EpochBatchSampler:
    """Batches of sample indices for one rank; see the module docstring for the order.

    ``position`` is the next batch (within ``epoch``) the consumer will get;
    iteration starts there. :class:`teamvla_data.loader.TeamDataLoader` advances it
    as batches are consumed, which makes :meth:`state_dict` exact.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        sample_tasks: np.ndarray | None = None,
        task_names: Sequence[str] | None = None,
        weighting: str = "proportional",
        task_weights: Mapping[str, float] | None = None,
        samples_per_epoch: int | None = None,
    ) -> None:
        if num_samples < 1 or batch_size < 1:
            raise ValueError("num_samples and batch_size must be >= 1")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"rank must be in [0, world_size), received rank={rank}, world_size={world_size}"
            )
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, received {weighting!r}")
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.weighting = weighting
        self.epoch = 0
        self.position = 0
        self.iteration = 0  # set by the loader for each pass (see teamvla_data._shared_batches)
        self._task_index: list[np.ndarray] = []
        self._task_p: np.ndarray | None = None
        if weighting != "proportional":
            if not shuffle:
                raise ValueError("weighted task sampling needs shuffle=True")
            if sample_tasks is None or task_names is None:
                raise ValueError("weighted task sampling needs sample_tasks and task_names")
            self._setup_weights(
                np.asarray(sample_tasks), list(task_names), weighting, task_weights or {}
            )
        self.epoch_length = int(samples_per_epoch or self.num_samples)

    def _setup_weights(
        self,
        sample_tasks: np.ndarray,
        names: list[str],
        weighting: str,
        weights: Mapping[str, float],
    ) -> None:
        if len(sample_tasks) != self.num_samples:
            raise ValueError("sample_tasks must have one entry per sample")
        self._task_index = [np.flatnonzero(sample_tasks == i) for i in range(len(names))]
        if weighting == "uniform":
            w = np.array([1.0 if len(ix) else 0.0 for ix in self._task_index])
        else:
            unknown = sorted(set(weights) - set(names))
            if unknown:
                raise ValueError(
                    f"task_weights names task(s) {unknown} not in the dataset (tasks: {names})"
                )
            missing = [n for n in names if n not in weights]
            if missing:
                raise ValueError(
                    f"task_weights has no weight for task(s) {missing}; give each task one (0 excludes it)"
                )
            w = np.array([float(weights[n]) for n in names])
        if w.sum() <= 0:
            raise ValueError("task weights must have a positive sum")
        self._task_p = w / w.sum()

    # ------------------------------------------------------------------ order

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The global sample order of ``epoch`` (before sharding), int64."""
        rng = np.random.default_rng([self.seed, epoch])
        if self._task_p is None:
            if not self.shuffle:
                return np.arange(self.num_samples, dtype=np.int64)
            order = rng.permutation(self.num_samples)
            if self.epoch_length != self.num_samples:
                reps = -(-self.epoch_length // self.num_samples)
                extra = [rng.permutation(self.num_samples) for _ in range(reps - 1)]
                order = np.concatenate([order, *extra])[: self.epoch_length]
            return order.astype(np.int64)
        draws = rng.choice(len(self._task_p), size=self.epoch_length, p=self._task_p)
        order = np.empty(self.epoch_length, np.int64)
        for t, members in enumerate(self._task_index):
            where = np.flatnonzero(draws == t)
            if not len(where):
                continue
            reps = -(-len(where) // len(members))
            picks = np.concatenate([rng.permutation(members) for _ in range(reps)])
            order[where] = picks[: len(where)]
        return order

    def rank_order(self, epoch: int) -> np.ndarray:
        """This rank's share of ``epoch``'s order."""
        order = self.epoch_order(epoch)
        if self.world_size > 1:
            n = len(order)
            if self.drop_last:
                order = order[: n - n % self.world_size]
            elif n % self.world_size:
                pad = self.world_size - n % self.world_size
                order = np.concatenate([order, np.resize(order, pad)])
            order = order[self.rank :: self.world_size]
        return order

    def _per_rank(self) -> int:
        n, w = self.epoch_length, self.world_size
        return n // w if self.drop_last else -(-n // w)

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        per_rank = self._per_rank()
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[IndexBatch]:
        epoch, start, iteration = self.epoch, self.position, self.iteration
        order = self.rank_order(epoch)
        for b in range(start, len(self)):
            chunk = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield IndexBatch(chunk.tolist(), epoch, iteration)

    # ------------------------------------------------------------------ epochs and resumption

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch.

        A position part-way through that same epoch (restored by
        :meth:`load_state_dict`, or left by a loop that stopped early) is kept,
        so ``load_state_dict(s); set_epoch(s["epoch"])`` resumes exactly.
        """
        epoch = int(epoch)
        if epoch != self.epoch or self.position >= len(self):
            self.epoch = epoch
            self.position = 0

    def state_dict(self) -> dict[str, int]:
        """JSON-able position: the next batch to be consumed, plus what must match on restore."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "rank": self.rank,
            "epoch_length": self.epoch_length,
        }

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Resume at a position saved by :meth:`state_dict` (same data, batch size, seed and world size)."""
        for key in ("seed", "num_samples", "batch_size", "world_size", "epoch_length"):
            if key in state and int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"cannot resume: saved {key}={state[key]} but this loader has {key}={getattr(self, key)}; "
                    "resuming needs the same dataset selection, batch size, seed and world size"
                )
        position = int(state["position"])
        if not 0 <= position <= len(self):
            raise ValueError(f"cannot resume: position {position} outside 0..{len(self)}")
        self.epoch = int(state["epoch"])
        self.position = position
