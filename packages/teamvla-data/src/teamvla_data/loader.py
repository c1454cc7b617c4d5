"""``make_dataloader``: a torch DataLoader over :class:`MultiTaskDataset`, whole batches at a time.

Needs the ``torch`` extra; import this module only through
:func:`teamvla_data.make_dataloader` (which imports it lazily).

Design: the :class:`~teamvla_data.sampler.EpochBatchSampler` runs in the main
process and hands each worker a list of indices; the worker builds the whole
batch with :meth:`MultiTaskDataset.__getitems__` (numpy gathers from the
memory-mapped cache) and packs it into a reusable shared-memory slot
(:mod:`teamvla_data._shared_batches`); the main process copies it out once.
Images cross the worker boundary as uint8. With ``num_workers=0`` the arrays
are wrapped as tensors without any copy.

With ``cache_max_bytes`` the dataset decodes images into a cache its workers
share (created before they start); the sampler then shards ranks by episode
and, when the cache cannot hold every chunk, shuffles among the resident
chunks (``shuffle: uniform`` keeps a plain shuffle).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from teamvla_data._shared_batches import SlotDataset
from teamvla_data._torch import require_torch
from teamvla_data.config import DatasetConfig, as_dataset_config
from teamvla_data.dataset import MultiTaskDataset
from teamvla_data.index import Split
from teamvla_data.sampler import EpochBatchSampler
from teamvla_data.stats import NormalizationStats

torch = require_torch("teamvla_data.make_dataloader")
from torch.utils.data import DataLoader  # noqa: E402 - only once torch is known to be installed

log = logging.getLogger(__name__)

#: Seconds the main process waits for one batch from the workers before raising: a worker
#: stuck for good (say, a deadlock inside a decoding library) is an error, not a hang.
BATCH_TIMEOUT_S = 600

#: Shared-memory slots per worker: enough for torch's default prefetch of 2 plus the one being copied.
SLOTS_PER_WORKER = 3


def to_torch(batch: Mapping[str, Any]) -> dict[str, Any]:
    """numpy arrays -> tensors (zero-copy, same dtype); lists of str stay lists."""
    return {
        k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
        for k, v in batch.items()
    }


def _identity(batch: Any) -> Any:
    return batch


class TeamDataLoader(DataLoader):
    """A ``torch.utils.data.DataLoader`` that counts consumed batches so its position can be saved.

    * ``set_epoch(e)``: select the epoch (reshuffles; distributed ranks stay disjoint);
      a fully consumed epoch moves to the next one by itself.
    * ``state_dict()`` / ``load_state_dict()``: JSON-able ints; a restored loader
      yields exactly the batches the interrupted run had not consumed yet.
    * ``stats``: the :class:`NormalizationStats` applied (or None).
    * ``multitask``: the :class:`MultiTaskDataset` behind the loader; ``dataset`` is
      that dataset, or with workers a shallow copy that hands batches over
      through shared-memory slots.
    * ``pin_batches``: batches are built in page-locked memory (``pin_memory=True``
      with CUDA available). torch's own pinning thread is not used (it would
      copy every batch once more), so ``loader.pin_memory`` reads False.
    """

    def __init__(
        self, dataset: MultiTaskDataset, batch_sampler: EpochBatchSampler, **kwargs: Any
    ) -> None:
        workers = int(kwargs.get("num_workers", 0))
        self.pin_batches = bool(kwargs.pop("pin_memory", False)) and torch.cuda.is_available()
        source: Any = dataset
        if workers > 0:
            slots = max(SLOTS_PER_WORKER, int(kwargs.get("prefetch_factor") or 2) + 1)
            source = SlotDataset.wrap(
                dataset, workers, slots, batch_sampler.batch_size, probe=batch_sampler.first_sample
            )
        super().__init__(source, batch_sampler=batch_sampler, collate_fn=_identity, **kwargs)
        self.epoch_sampler = batch_sampler
        # torch types ``dataset`` as a plain Dataset (and with workers it is a wrapper): this is
        # the typed MultiTaskDataset itself.
        self.multitask: MultiTaskDataset = dataset
        self.stats: NormalizationStats | None = dataset.stats
        self._source = source if workers > 0 else None

    def __iter__(self) -> Iterator[dict[str, Any]]:  # type: ignore[override] # a generator, not torch's iterator class
        sampler = self.epoch_sampler
        if sampler.position >= len(sampler):  # the previous epoch was used up: go on with the next
            sampler.epoch, sampler.position = sampler.epoch + 1, 0
        source = self._source
        if source is None:
            for raw in super().__iter__():
                sampler.position += 1  # counted when handed out: a state saved now resumes after it
                batch = to_torch(raw)
                if self.pin_batches:
                    batch = {
                        k: v.pin_memory() if torch.is_tensor(v) else v for k, v in batch.items()
                    }
                yield batch
            return
        sampler.iteration = source.start_iteration(persistent_workers=self.persistent_workers)
        it = super().__iter__()
        try:
            for raw in it:
                batch = source.receive(raw, pin=self.pin_batches)
                sampler.position += 1
                yield batch
        finally:
            # Without persistent workers, dropping the iterator shuts its workers down (joins
            # them) before the slots can be handed to the next pass's workers.
            del it
            source.end_iteration()

    @property
    def epoch(self) -> int:
        return self.epoch_sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s order from its first batch (a just-restored position in that epoch is kept)."""
        self.epoch_sampler.set_epoch(epoch)

    def state_dict(self) -> dict[str, int]:
        """The position of the next batch to be yielded (epoch, batch) and the settings that must match."""
        return self.epoch_sampler.state_dict()

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Resume from :meth:`state_dict`."""
        self.epoch_sampler.load_state_dict(state)


def _distributed_rank() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def make_dataloader(
    cfg: DatasetConfig | Mapping[str, Any] | Any,
    split: Split = "train",
    *,
    stats: NormalizationStats | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    dataset: MultiTaskDataset | None = None,
) -> TeamDataLoader:
    """Build the DataLoader of ``cfg`` (a DatasetConfig, a loaded config, or the ``dataset`` mapping).

    ``split='train'`` uses the configured shuffling, task weighting and
    augmentation; ``'val'`` and ``'all'`` give an evaluation loader: sequential,
    every sample once (no task weighting, no augmentation, last batch kept).
    ``rank``/``world_size`` default to torch.distributed's when it is
    initialised. ``stats`` (e.g. from a checkpoint) replaces the statistics the
    dataset would load or compute; they must match the train selection.
    ``dataset`` reuses an already opened dataset (its transforms are kept).
    """
    cfg = as_dataset_config(cfg)
    if rank is None or world_size is None:
        auto_rank, auto_world = _distributed_rank()
        rank = auto_rank if rank is None else rank
        world_size = auto_world if world_size is None else world_size
    ds = dataset if dataset is not None else MultiTaskDataset.from_config(cfg, split, stats=stats)
    train = split == "train"
    shuffle = bool(cfg.shuffle) if train else False
    resident = None
    images = ds.images
    if images is not None and shuffle and cfg.shuffle != "uniform" and not images.holds_everything:
        resident = images.resident_chunks(cfg.batch_size)
        if resident < 1:
            log.warning(
                "cache_max_bytes=%d holds too few chunks to shuffle among; every batch decodes "
                "its frames (plain uniform shuffle)",
                images.budget,
            )
            resident = None
    sampler = EpochBatchSampler(
        len(ds),
        cfg.batch_size,
        shuffle=shuffle,
        seed=cfg.seed,
        drop_last=cfg.drop_last if train else False,
        rank=rank,
        world_size=world_size,
        sample_tasks=(
            ds.sample_tasks
            if (train and cfg.task_weighting != "proportional") or images is not None
            else None  # (with the decode cache, episode shards are dealt per task)
        ),
        task_names=ds.tasks,
        weighting=cfg.task_weighting if train else "proportional",
        task_weights=cfg.task_weights,
        samples_per_epoch=cfg.samples_per_epoch if train else None,
        # With the decode cache, ranks split episodes (each reads only its own files).
        episode_lengths=[e.num_steps for e in ds.episodes] if images is not None else None,
        sample_chunks=(
            images.sample_chunks(ds.episode_offsets) if images is not None and resident else None
        ),
        resident_chunks=resident,
    )
    kwargs: dict[str, Any] = {"num_workers": cfg.num_workers, "pin_memory": cfg.pin_memory}
    if cfg.num_workers > 0:
        kwargs["timeout"] = BATCH_TIMEOUT_S
        kwargs["persistent_workers"] = cfg.persistent_workers
        if cfg.prefetch_factor is not None:
            kwargs["prefetch_factor"] = cfg.prefetch_factor
    return TeamDataLoader(ds, sampler, **kwargs)
