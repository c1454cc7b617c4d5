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

With a byte-bounded decode cache (``cache_max_bytes``) two things change
(:mod:`teamvla_data.cache_order`): given ``episode_lengths``, ranks split the
*episodes* instead of positions (each rank reads only its own files; shards are
fixed for the run, equal in length by cutting to the shortest with
``drop_last`` or repeating the start of the others), and given
``resident_chunks`` (and ``sample_chunks``, each sample's chunk) a shuffled
pass reads at most that many chunks at a time (a shuffle buffer of chunks)
instead of permuting uniformly. Task weighting, epoch lengths and resumption work the same.

The sampler yields :class:`IndexBatch` lists, which carry the epoch so that
random transforms in (persistent) workers know it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from teamvla_data.cache_order import assign_episodes, lane_order

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
        episode_lengths: Sequence[int] | np.ndarray | None = None,
        sample_chunks: np.ndarray | None = None,
        resident_chunks: int | None = None,
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
        self._sample_tasks = None if sample_tasks is None else np.asarray(sample_tasks, np.int64)
        if weighting != "proportional":
            if not shuffle:
                raise ValueError("weighted task sampling needs shuffle=True")
            if self._sample_tasks is None or task_names is None:
                raise ValueError("weighted task sampling needs sample_tasks and task_names")
            self._setup_weights(self._sample_tasks, list(task_names), weighting, task_weights or {})
        self.epoch_length = int(samples_per_epoch or self.num_samples)
        self._explicit_length = samples_per_epoch is not None
        # --- decode cache: resident chunks and episode shards (see the module docstring)
        self.resident_chunks = int(resident_chunks) if resident_chunks and shuffle else 0
        self._chunk_of: np.ndarray | None = None
        if self.resident_chunks:
            if sample_chunks is None or len(sample_chunks) != self.num_samples:
                raise ValueError("resident_chunks needs sample_chunks, one chunk per sample")
            self._chunk_of = np.asarray(sample_chunks, np.int64)
        self._shard: np.ndarray | None = None  # this rank's samples, with episode shards
        self._rank_length = 0
        if episode_lengths is not None and self.world_size > 1:
            lengths = np.asarray(episode_lengths, np.int64)
            if int(lengths.sum()) != self.num_samples:
                raise ValueError("episode_lengths must add up to num_samples")
            self._setup_shards(np.repeat(np.arange(len(lengths)), lengths), lengths)

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

    def _setup_shards(self, episode: np.ndarray, lengths: np.ndarray) -> None:
        first_sample = np.concatenate([[0], np.cumsum(lengths)])[:-1]
        tasks = (
            self._sample_tasks[first_sample]
            if self._sample_tasks is not None
            else np.zeros(len(lengths), np.int64)
        )
        ranks = assign_episodes(tasks, self.world_size, self.seed)
        sizes = np.bincount(ranks, weights=lengths, minlength=self.world_size).astype(np.int64)
        if sizes.min() == 0:
            raise ValueError(
                f"{len(lengths)} episode(s) cannot be shared by {self.world_size} ranks: "
                "every rank needs at least one"
            )
        self._shard = np.flatnonzero(ranks[episode] == self.rank)
        if self._explicit_length or self._task_p is not None:
            n, w = self.epoch_length, self.world_size
            self._rank_length = n // w if self.drop_last else -(-n // w)
        else:
            self._rank_length = int(sizes.min() if self.drop_last else sizes.max())

    # ------------------------------------------------------------------ order

    def _pass(
        self, members: np.ndarray, rng: np.random.Generator, lanes: int, batch: int
    ) -> np.ndarray:
        """One pass over ``members``: in order, permuted, or cache-aware (``lanes`` resident
        chunks, interleaved ``batch`` samples at a time)."""
        if not self.shuffle:
            return members
        if self._chunk_of is None or not lanes:
            return rng.permutation(members)
        return lane_order(members, self._chunk_of[members], lanes, rng, batch)

    def _passes(
        self,
        members: np.ndarray,
        length: int,
        rng: np.random.Generator,
        lanes: int,
        batch: int | None = None,
    ) -> np.ndarray:
        reps = -(-length // len(members))
        per_batch = self.batch_size if batch is None else batch
        passes = [self._pass(members, rng, lanes, per_batch) for _ in range(reps)]
        return np.concatenate(passes)[:length]

    def _weighted(
        self, rng: np.random.Generator, length: int, shard: np.ndarray | None
    ) -> np.ndarray:
        assert self._task_p is not None
        index = self._task_index
        p = self._task_p
        if shard is not None:  # this rank's samples of each task; tasks it lacks are not drawn
            index = [np.intersect1d(members, shard) for members in index]
            p = p * np.array([len(m) > 0 for m in index])
            p = p / p.sum()
        draws = rng.choice(len(p), size=length, p=p)
        order = np.empty(length, np.int64)
        for t, members in enumerate(index):
            where = np.flatnonzero(draws == t)
            if not len(where):
                continue
            lanes = max(1, round(self.resident_chunks * p[t])) if self.resident_chunks else 0
            if self._chunk_of is None or not lanes:  # today's order, draw for draw
                reps = -(-len(where) // len(members))
                picks = np.concatenate([rng.permutation(members) for _ in range(reps)])
            else:  # this task's share of a batch is about batch_size * p[t]
                share = max(1, round(self.batch_size * float(p[t])))
                picks = self._passes(members, len(where), rng, lanes, share)
            order[where] = picks[: len(where)]
        return order

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The global sample order of ``epoch`` (before sharding by position), int64.

        With episode shards there is no global order: this is this rank's.
        """
        if self._shard is not None:
            return self._shard_order(epoch, self.rank)
        rng = np.random.default_rng([self.seed, epoch])
        if self._task_p is not None:
            return self._weighted(rng, self.epoch_length, None)
        if not self.shuffle:
            return np.arange(self.num_samples, dtype=np.int64)
        if self._chunk_of is not None:
            members = np.arange(self.num_samples, dtype=np.int64)
            return self._passes(members, self.epoch_length, rng, self.resident_chunks)
        order = rng.permutation(self.num_samples)
        if self.epoch_length != self.num_samples:
            reps = -(-self.epoch_length // self.num_samples)
            extra = [rng.permutation(self.num_samples) for _ in range(reps - 1)]
            order = np.concatenate([order, *extra])[: self.epoch_length]
        return order.astype(np.int64)

    def _shard_order(self, epoch: int, rank: int) -> np.ndarray:
        assert self._shard is not None
        rng = np.random.default_rng([self.seed, epoch, rank])
        if self._task_p is not None:
            return self._weighted(rng, self._rank_length, self._shard)
        return self._passes(self._shard, self._rank_length, rng, self.resident_chunks)

    def rank_order(self, epoch: int) -> np.ndarray:
        """This rank's share of ``epoch``'s order."""
        if self._shard is not None:
            return self._shard_order(epoch, self.rank)
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

    @property
    def first_sample(self) -> int:
        """A sample this rank reads (the first of its episode shard; else 0)."""
        return int(self._shard[0]) if self._shard is not None else 0

    def _per_rank(self) -> int:
        if self._shard is not None:
            return self._rank_length
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
            "resident_chunks": self.resident_chunks,
            "episode_shards": int(self._shard is not None),
        }

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Resume at a position saved by :meth:`state_dict` (same data, batch size, seed and world size)."""
        mine = self.state_dict()
        for key in (
            "seed",
            "num_samples",
            "batch_size",
            "world_size",
            "epoch_length",
            "resident_chunks",
            "episode_shards",
        ):
            if key in state and int(state[key]) != mine[key]:
                raise ValueError(
                    f"cannot resume: saved {key}={state[key]} but this loader has {key}={mine[key]}; "
                    "resuming needs the same dataset selection, batch size, seed, world size and "
                    "decode cache budget"
                )
        position = int(state["position"])
        if not 0 <= position <= len(self):
            raise ValueError(f"cannot resume: position {position} outside 0..{len(self)}")
        self.epoch = int(state["epoch"])
        self.position = position
