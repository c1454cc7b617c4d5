"""``MultiTaskDataset``: step-level samples with observation/action windows, read a batch at a time.

Usable without torch. Sample ``i`` is step ``t`` of episode ``e`` in the order
(task, episode_id, step). :meth:`MultiTaskDataset.__getitems__` builds a whole
batch (see :mod:`teamvla_data.batch`) with one gather per field from the column
store (:meth:`teamvla_data.columns.ColumnStore.take`: images by ``preadv`` in
file order straight into the batch, small fields by fancy indexing).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from teamvla_schema.errors import SchemaError

from teamvla_data import batch as B
from teamvla_data.columns import ColumnStore, load_in_memory, open_or_build_cache, prune_stale
from teamvla_data.config import DatasetConfig, as_dataset_config
from teamvla_data.index import EpisodeIndex, Skipped, Split, select_episodes, split_episodes
from teamvla_data.manifest import STATE_DIR, EpisodeRecord
from teamvla_data.stats import NormalizationStats, NormalizeMode, compute_stats, stats_key
from teamvla_data.transforms import (
    ColorJitter,
    Compose,
    Normalize,
    RandomShift,
    Resize,
    Transform,
)

log = logging.getLogger(__name__)

#: Rows read per chunk when computing statistics.
STATS_CHUNK_ROWS = 1 << 16


@dataclass(frozen=True)
class EpisodeInfo:
    """One episode of a dataset: ``index`` is its position in ``dataset.episodes``."""

    index: int
    task: str
    episode_id: str
    success: bool
    num_steps: int
    first_sample: int  # dataset index of its step 0
    record: EpisodeRecord = field(repr=False, compare=False)

    @property
    def path(self) -> Path:
        """The episode file."""
        return self.record.abs_path


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
    ) -> None:
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
        if use_cache:
            spec = {
                "roots": [str(r) for r in self.index.roots],
                "tasks": sorted(tasks) if tasks is not None else None,
                "success_only": success_only,
                "max_episodes_per_task": max_episodes_per_task,
                "split_seed": split_seed if max_episodes_per_task is not None else None,
            }
            try:
                self.store: ColumnStore = open_or_build_cache(
                    selected, self.cache_root, on_error=on_error, spec=spec
                )
            except OSError as exc:
                raise SchemaError(
                    f"cannot build the column cache ({exc.strerror}); pass cache_dir "
                    "(dataset.cache_dir) to put it elsewhere, or use_cache=False to decompress into memory",
                    path=self.cache_root,
                ) from None
            if self.store.built:  # a new cache may supersede older ones
                current = {
                    (str(r.root), r.path): r.identity
                    for r in (*self.index.records, *self.index.bad)
                }
                prune_stale(
                    self.cache_root, current, self.index.roots, keep=self.store.key, spec=spec
                )
        else:
            self.store = load_in_memory(selected, on_error=on_error)
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

    # ------------------------------------------------------------------ construction helpers

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
        cache directory or computed and saved; passing ``stats`` (e.g. from a
        checkpoint) uses those instead, after checking they were computed over
        the same episodes and fields.
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
        )
        pipeline: list[Transform] = []
        if cfg.image_size is not None:
            pipeline.append(Resize(cfg.image_size))
        if split == "train" and cfg.augment.enabled:
            if cfg.augment.shift_pixels:
                pipeline.append(RandomShift(cfg.augment.shift_pixels, seed=cfg.seed))
            if cfg.augment.color_jitter:
                pipeline.append(ColorJitter(cfg.augment.color_jitter, seed=cfg.seed + 1))
        if cfg.normalize:
            if stats is None:
                stats = ds.load_or_compute_stats(cfg.stats_fields, mode=cfg.normalize_mode)
            pipeline.append(ds.normalizer(stats, fields=cfg.stats_fields, mode=cfg.normalize_mode))
            ds.stats = stats.with_mode(cfg.normalize_mode)
        ds.transforms = pipeline
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
    def sample_tasks(self) -> np.ndarray:
        """Task number (index into :attr:`tasks`) of every sample, int64 (len(self),)."""
        return np.repeat(self._ep_task, self._ep_len)

    def field_shape(self, name: str) -> tuple[int, ...]:
        """Per-step shape of the stored field ``name`` (e.g. ``(H, W, 3)`` for ``rgb_a``, ``(N,)`` for ``q_a``)."""
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
        frame = store.column("rgb_a").shape[1:]
        images = np.empty((2, *obs_rows.shape, *frame), np.uint8)
        batch: dict[str, Any] = {
            B.RGB_A: store.take("rgb_a", obs_rows, out=images[0]),
            B.RGB_B: store.take("rgb_b", obs_rows, out=images[1]),
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
        return stats_key(self.stats_records, fields)

    def _stats_chunks(self, fields: Sequence[str]) -> Iterator[dict[str, np.ndarray]]:
        # Contiguous cache rows of consecutive train episodes are read together.
        spans: list[tuple[int, int]] = []
        for r in sorted(
            self.stats_records, key=lambda r: self.store.starts[(r.task, r.episode_id)]
        ):
            start = self.store.starts[(r.task, r.episode_id)]
            if spans and spans[-1][1] == start and spans[-1][1] - spans[-1][0] < STATS_CHUNK_ROWS:
                spans[-1] = (spans[-1][0], start + r.num_steps)
            else:
                spans.append((start, start + r.num_steps))
        for a, b in spans:
            yield {name: np.asarray(self.store.column(name)[a:b]) for name in fields}

    def compute_stats(
        self, fields: Sequence[str] = B.NORMALIZED_KEYS, *, mode: NormalizeMode = "mean_std"
    ) -> NormalizationStats:
        """Statistics of ``fields`` over the train split, in one streaming pass over the columns."""
        fields = list(fields)
        return compute_stats(
            self._stats_chunks(fields),
            fields,
            key=self.stats_key(fields),
            num_episodes=len(self.stats_records),
            mode=mode,
        )

    def stats_path(self, fields: Sequence[str] = B.NORMALIZED_KEYS) -> Path:
        """Where statistics for ``fields`` are saved (in the cache directory).

        The name holds the statistics key (portable: episodes, sizes, mtimes)
        and a hash of the train files' local identities (ctime, inode), so that
        an episode rewritten without a new size or mtime gets new statistics.
        """
        local = hashlib.sha256()
        for r in sorted(self.stats_records, key=lambda r: (r.task, r.episode_id)):
            local.update(f"{r.task}\x1f{r.episode_id}\x1f{r.ctime_ns}\x1f{r.ino}\n".encode())
        return (
            self.cache_root / f"stats-{self.stats_key(fields)[:24]}-{local.hexdigest()[:12]}.json"
        )

    def load_or_compute_stats(
        self, fields: Sequence[str] = B.NORMALIZED_KEYS, *, mode: NormalizeMode = "mean_std"
    ) -> NormalizationStats:
        """Saved statistics whose key matches, or freshly computed (and saved atomically) ones."""
        path = self.stats_path(fields)
        key = self.stats_key(fields)
        if path.is_file():  # not a FIFO or a directory someone put there
            try:
                stats = NormalizationStats.load(path)
            except SchemaError as exc:
                log.warning("ignoring unreadable statistics: %s", exc)
            else:
                if stats.key == key:
                    return stats.with_mode(mode)
        stats = self.compute_stats(fields, mode=mode)
        try:
            stats.save(path)
        except OSError as exc:
            log.warning("cannot save statistics to %s (%s)", path, exc.strerror)
        return stats

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
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} file(s):")
            lines.extend(f"  {s.path}: {s.reason}" for s in self.skipped)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"MultiTaskDataset({len(self.episodes)} episodes, {len(self)} samples, split={self.split!r}, "
            f"tasks={self.tasks}, obs_history={self.obs_history}, action_horizon={self.action_horizon})"
        )
