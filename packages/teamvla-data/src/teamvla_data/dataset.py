"""``MultiTaskDataset``: step-level samples with observation/action windows, read a batch at a time.

Usable without torch. Sample ``i`` is step ``t`` of episode ``e`` in the order
(task, episode_id, step). :meth:`MultiTaskDataset.__getitems__` builds a whole
batch (see :mod:`teamvla_data.batch`) with one gather per field: small fields
from the column store (:meth:`teamvla_data.columns.ColumnStore.take`), images
either from the same store (``preadv`` in file order straight into the batch)
or, with ``cache_max_bytes``, from chunks decoded on demand into a byte-bounded
cache shared by the loader's workers (:mod:`teamvla_data.image_chunks`).
Statistics live in :mod:`teamvla_data.stats`; the methods here only name the
dataset's train selection and column store.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from teamvla_schema.errors import SchemaError

from teamvla_data import batch as B
from teamvla_data import stats as stats_home
from teamvla_data.columns import (
    ARRAY_COLUMNS,
    IMAGE_COLUMNS,
    LOWDIM_COLUMNS,
    ColumnStore,
    load_in_memory,
    open_dataset_cache,
)
from teamvla_data.config import DatasetConfig, as_dataset_config
from teamvla_data.image_chunks import DecodedImages
from teamvla_data.index import (
    EpisodeIndex,
    EpisodeInfo,
    Skipped,
    Split,
    select_episodes,
    split_episodes,
)
from teamvla_data.manifest import STATE_DIR, EpisodeRecord
from teamvla_data.stats import NormalizationStats, NormalizeMode
from teamvla_data.transforms import Compose, Normalize, Transform, config_transforms

log = logging.getLogger(__name__)


class MultiTaskDataset:
    """Samples from the episodes of one or more roots (see ``docs/dataset.md``).

    Opening reads each root's manifest (updated incrementally), selects episodes
    (``tasks``, ``success_only``, ``max_episodes_per_task``), opens or builds the
    column cache of the selection, and splits it by episode into train/val.
    ``split`` picks the side this dataset serves. Bad files raise a
    :class:`SchemaError` naming them, or with ``on_error='skip'`` are left out
    and listed in :attr:`skipped`.

    ``dataset[i]`` is one sample (no batch axis); ``dataset.__getitems__(idx)``
    a batch. ``transforms`` (callables on batches) run on every batch.

    ``cache_max_bytes=None`` copies every field, images included, into the
    column cache once (today's layout). A number of bytes keeps only the small
    fields in columns and decodes images from the episode files on demand into
    a cache of that size shared by the loader's workers (:attr:`images`).
    """

    def __init__(
        self,
        roots: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
        *,
        tasks: Sequence[str] | None = None,
        success_only: bool = False,
        max_episodes_per_task: int | None = None,
        split: Split = "all",
        val_fraction: float = 0.0,
        split_seed: int = 0,
        obs_history: int = 0,
        action_horizon: int = 1,
        transforms: Sequence[Transform] | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        use_cache: bool = True,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_max_bytes: int | None = None,
    ) -> None:
        if cache_max_bytes is not None and cache_max_bytes < 0:
            raise ValueError(f"cache_max_bytes must be >= 0 or None, received {cache_max_bytes}")
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', received {split!r}")
        if obs_history < 0 or action_horizon < 1:
            raise ValueError("obs_history must be >= 0 and action_horizon >= 1")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', received {on_error!r}")
        self.split: Split = split
        self.obs_history = int(obs_history)
        self.action_horizon = int(action_horizon)
        self.epoch = 0
        self.stats: NormalizationStats | None = None

        self.index = EpisodeIndex.open(roots)
        selected, skipped = select_episodes(
            self.index,
            tasks=tasks,
            success_only=success_only,
            max_episodes_per_task=max_episodes_per_task,
            split_seed=split_seed,
            on_error=on_error,
        )
        if not selected:
            raise SchemaError(
                f"no episodes selected from {[str(r) for r in self.index.roots]} "
                f"(tasks={list(tasks) if tasks is not None else None}, success_only={success_only})"
            )
        self.cache_root = (
            Path(cache_dir) if cache_dir is not None else self.index.roots[0] / STATE_DIR / "cache"
        )
        names = ARRAY_COLUMNS if cache_max_bytes is None else LOWDIM_COLUMNS
        spec = {
            "roots": [str(r) for r in self.index.roots],
            "tasks": sorted(tasks) if tasks is not None else None,
            "success_only": success_only,
            "max_episodes_per_task": max_episodes_per_task,
            "split_seed": split_seed if max_episodes_per_task is not None else None,
        }
        if names != ARRAY_COLUMNS:  # so that a full and a small-fields cache never prune each other
            spec["columns"] = list(names)
        self.store: ColumnStore = (
            open_dataset_cache(self.index, selected, self.cache_root, spec, on_error, names)
            if use_cache
            else load_in_memory(selected, on_error=on_error, names=names)
        )
        self.skipped: list[Skipped] = [*skipped, *self.store.skipped]
        usable = [r for r in selected if (r.task, r.episode_id) in self.store.starts]
        if not usable:
            raise SchemaError("every selected episode was skipped as unreadable")
        self.train_records, self.val_records = split_episodes(
            usable, val_fraction=val_fraction, split_seed=split_seed
        )
        records = {"train": self.train_records, "val": self.val_records, "all": usable}[split]
        if not records:
            raise SchemaError(
                f"the {split!r} split is empty ({len(usable)} episodes, val_fraction={val_fraction})"
            )
        self._records = records
        self._set_episodes(records)
        self._transforms = Compose(transforms or [])
        #: Images decoded on demand (``cache_max_bytes`` set), else None (they are columns).
        self.images: DecodedImages | None = (
            None
            if cache_max_bytes is None
            else DecodedImages(records, cache_max_bytes, obs_history)
        )

    def _set_episodes(self, records: list[EpisodeRecord]) -> None:
        lens = np.array([r.num_steps for r in records], np.int64)
        self._ep_len = lens
        self._ep_row = np.array(
            [self.store.starts[(r.task, r.episode_id)] for r in records], np.int64
        )
        self._offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        self.tasks: list[str] = sorted({r.task for r in records})
        task_id = {t: i for i, t in enumerate(self.tasks)}
        self._ep_task = np.array([task_id[r.task] for r in records], np.int64)
        self.episodes: list[EpisodeInfo] = [
            EpisodeInfo(i, r.task, r.episode_id, r.success, r.num_steps, int(self._offsets[i]), r)
            for i, r in enumerate(records)
        ]

    @classmethod
    def from_config(
        cls,
        cfg: DatasetConfig | Any,
        split: Split = "train",
        *,
        stats: NormalizationStats | None = None,
    ) -> MultiTaskDataset:
        """A dataset with the standard transforms of ``cfg``: resize, augmentation (train only), normalisation.

        With ``cfg.normalize``, statistics of the train split are loaded from the
        cache directory or computed and saved (:func:`teamvla_data.stats.load_or_compute`);
        passing ``stats`` (e.g. from a checkpoint) uses those instead, after
        checking they were computed over the same episodes and fields.
        """
        cfg = as_dataset_config(cfg)
        ds = cls(
            cfg.roots,
            tasks=cfg.tasks,
            success_only=cfg.success_only,
            max_episodes_per_task=cfg.max_episodes_per_task,
            split=split,
            val_fraction=cfg.val_fraction,
            split_seed=cfg.split_seed,
            obs_history=cfg.obs_history,
            action_horizon=cfg.action_horizon,
            on_error=cfg.on_error,
            use_cache=cfg.use_cache,
            cache_dir=cfg.cache_dir,
            cache_max_bytes=cfg.cache_max_bytes,
        )
        normalize = None
        if cfg.normalize:
            if stats is None:
                stats = ds.load_or_compute_stats(cfg.stats_fields, mode=cfg.normalize_mode)
            normalize = ds.normalizer(stats, fields=cfg.stats_fields, mode=cfg.normalize_mode)
            ds.stats = stats.with_mode(cfg.normalize_mode)
        ds.transforms = config_transforms(cfg, train=split == "train", normalize=normalize)
        return ds

    # ------------------------------------------------------------------ basic protocol

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def transforms(self) -> Compose:
        """The batch transforms, applied in order by :meth:`__getitems__`."""
        return self._transforms

    @transforms.setter
    def transforms(self, value: Sequence[Transform] | Compose) -> None:
        self._transforms = value if isinstance(value, Compose) else Compose(list(value))

    def set_epoch(self, epoch: int) -> None:
        """Epoch used by random transforms when a batch does not say (see :class:`IndexBatch`)."""
        self.epoch = int(epoch)

    @property
    def episode_offsets(self) -> np.ndarray:
        """First sample of every episode, then ``len(self)``: int64 ``(len(episodes) + 1,)``."""
        return self._offsets

    @property
    def sample_tasks(self) -> np.ndarray:
        """Task number (index into :attr:`tasks`) of every sample, int64 (len(self),)."""
        return np.repeat(self._ep_task, self._ep_len)

    def field_shape(self, name: str) -> tuple[int, ...]:
        """Per-step shape of the stored field ``name`` (e.g. ``(H, W, 3)`` for ``rgb_a``, ``(N,)`` for ``q_a``)."""
        if self.images is not None and name in IMAGE_COLUMNS:
            return self.images.frame_shape
        return tuple(int(d) for d in self.store.column(name).shape[1:])

    def locate(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(episode_index, frame_index) of dataset indices."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            bad = int(idx[(idx < 0) | (idx >= n)][0])
            raise IndexError(f"sample index {bad} out of range for a dataset of {n} samples")
        ep = np.searchsorted(self._offsets, idx, side="right") - 1
        return ep, idx - self._offsets[ep]

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Sample ``i`` without the batch axis."""
        batch = self.__getitems__([int(i)])
        return {k: v[0] for k, v in batch.items()}

    def __getitems__(self, indices: Sequence[int] | np.ndarray) -> dict[str, Any]:
        """The batch of samples ``indices`` (numpy arrays; see :mod:`teamvla_data.batch`)."""
        epoch = getattr(indices, "epoch", self.epoch)
        ep, t = self.locate(indices)
        length = self._ep_len[ep][:, None]
        row0 = self._ep_row[ep][:, None]
        obs_t = t[:, None] + np.arange(-self.obs_history, 1)[None, :]
        act_t = t[:, None] + np.arange(self.action_horizon)[None, :]
        obs_pad = obs_t < 0
        act_pad = act_t >= length
        obs_rows = row0 + np.maximum(obs_t, 0)
        act_rows = row0 + np.minimum(act_t, length - 1)
        store = self.store
        instr_ids = store.column("instruction_id")[row0[:, 0] + t]
        # Both cameras in one allocation: one large block per batch is recycled by the allocator
        # (two separate ones get returned to the OS and page-faulted in again every batch).
        images = np.empty((2, *obs_rows.shape, *self.field_shape(B.RGB_A)), np.uint8)
        if self.images is not None:
            self.images.take(ep, t, np.maximum(obs_t, 0), out=images)
        else:
            store.take("rgb_a", obs_rows, out=images[0])
            store.take("rgb_b", obs_rows, out=images[1])
        batch: dict[str, Any] = {
            B.RGB_A: images[0],
            B.RGB_B: images[1],
            B.Q_A: store.take("q_a", obs_rows),
            B.Q_B: store.take("q_b", obs_rows),
            B.OBS_IS_PAD: obs_pad,
            B.ACTION_A: store.take("action_a", act_rows),
            B.ACTION_B: store.take("action_b", act_rows),
            B.GRIP_A: store.take("grip_a", act_rows),
            B.GRIP_B: store.take("grip_b", act_rows),
            B.ACTION_IS_PAD: act_pad,
            B.INSTRUCTION: [self.store.instructions[i] for i in instr_ids.tolist()],
            B.TASK: [self.tasks[i] for i in self._ep_task[ep].tolist()],
            B.EPISODE_INDEX: ep.astype(np.int64),
            B.FRAME_INDEX: t.astype(np.int64),
        }
        return self._transforms(batch, epoch=epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    # ------------------------------------------------------------------ statistics

    @property
    def stats_records(self) -> list[EpisodeRecord]:
        """The episodes statistics are computed over: the train side of the split."""
        return self.train_records

    def stats_key(self, fields: Sequence[str] = B.NORMALIZED_KEYS) -> str:
        """Key of statistics over :attr:`stats_records` for ``fields``."""
        return stats_home.stats_key(self.stats_records, fields)

    def compute_stats(
        self, fields: Sequence[str] = B.NORMALIZED_KEYS, *, mode: NormalizeMode = "mean_std"
    ) -> NormalizationStats:
        """Statistics of ``fields`` over the train split, in one streaming pass over the columns."""
        return stats_home.compute_from_columns(self.stats_records, fields, self.store, mode=mode)

    def stats_path(self, fields: Sequence[str] = B.NORMALIZED_KEYS) -> Path:
        """Where statistics for ``fields`` are saved (see :func:`teamvla_data.stats.stats_path`)."""
        return stats_home.stats_path(self.cache_root, self.stats_records, fields)

    def load_or_compute_stats(
        self, fields: Sequence[str] = B.NORMALIZED_KEYS, *, mode: NormalizeMode = "mean_std"
    ) -> NormalizationStats:
        """Saved statistics whose key matches, or freshly computed (and saved atomically) ones."""
        return stats_home.load_or_compute(
            self.stats_records, fields, self.store, self.cache_root, mode=mode
        )

    def normalizer(
        self,
        stats: NormalizationStats,
        fields: Sequence[str] | None = None,
        *,
        mode: NormalizeMode | None = None,
    ) -> Normalize:
        """A :class:`Normalize` for this dataset; refuses statistics computed over other episodes/fields."""
        fields = list(fields if fields is not None else stats.fields)
        return Normalize(stats, fields, mode=mode, expected_key=self.stats_key(list(stats.fields)))

    # ------------------------------------------------------------------ reporting

    def summary(self) -> str:
        """A few human-readable lines about the selection."""
        lines = [
            f"{len(self.episodes)} episodes, {len(self)} samples, split {self.split!r} "
            f"(train {len(self.train_records)} / val {len(self.val_records)} episodes)",
        ]
        for ti, task in enumerate(self.tasks):
            mask = self._ep_task == ti
            lines.append(
                f"  {task:<16} {int(mask.sum()):6d} episodes {int(self._ep_len[mask].sum()):8d} steps"
            )
        if self.store.path is not None:
            lines.append(f"cache {self.store.path}")
        if self.images is not None:
            lines.append(self.images.summary())
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} file(s):")
            lines.extend(f"  {s.path}: {s.reason}" for s in self.skipped)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"MultiTaskDataset({len(self.episodes)} episodes, {len(self)} samples, split={self.split!r}, "
            f"tasks={self.tasks}, obs_history={self.obs_history}, action_horizon={self.action_horizon})"
        )
