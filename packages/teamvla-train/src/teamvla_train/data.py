"""The trainer's view of the data: resumable per-epoch batch iterators plus what checkpoints need.

:class:`LoaderData` wraps teamvla-data's :func:`~teamvla_data.make_dataloader`
(train split, sharded per rank, normalised with train statistics; val split
with the same statistics). :class:`teamvla_train.synthetic.SyntheticData`
offers the same interface without a dataset (tests, benchmarks).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from teamvla_data import batch as keys
from teamvla_data import make_dataloader
from teamvla_data.stats import NormalizationStats

from teamvla_train.engine.distributed import SINGLE_PROCESS, DistInfo
from teamvla_train.normalization import FIELDS, Affine

if TYPE_CHECKING:
    from teamvla_data.loader import TeamDataLoader

    from teamvla_train.config import TrainConfig


class TrainData(Protocol):
    """What the training loop needs from a data source."""

    normalization: Affine  # how q / actions in the batches were normalised
    image_size: tuple[int, int]  # (H, W) of the batches' images
    tasks: list[str]  # task slugs of the training split
    stats: dict[str, Any] | None  # statistics as plain data, stored in checkpoints

    @property
    def num_train_batches(self) -> int:
        """Micro-batches per epoch on this rank."""
        ...

    def train_batches(self, *, epoch: int, start_batch: int = 0) -> Iterator[Mapping[str, Any]]:
        """Batches ``start_batch ..`` of ``epoch`` (must not draw from the global torch RNG)."""
        ...

    def val_batches(self) -> Iterator[Mapping[str, Any]] | None:
        """The held-out batches of this rank, or None without a validation split."""
        ...

    def close(self) -> None:
        """Release workers / files."""
        ...


def affine_from_stats(
    stats: NormalizationStats | None, fields: list[str], num_joints: int
) -> Affine:
    """The affine map the loader's :class:`~teamvla_data.Normalize` applies, per policy field.

    Read back through the public ``unnormalize`` (exact in float64): offset =
    unnormalize(0), scale = unnormalize(1) - offset. Fields the loader does not
    normalise stay identity.
    """
    base = Affine.identity(num_joints)
    if stats is None:
        return base
    offset, scale = dict(base.offset), dict(base.scale)
    for key in FIELDS:
        if key not in fields:
            continue
        zero = np.zeros(num_joints, np.float64)
        off = np.asarray(stats.unnormalize(key, zero), np.float64)
        offset[key] = off.astype(np.float32)
        scale[key] = (np.asarray(stats.unnormalize(key, zero + 1.0), np.float64) - off).astype(
            np.float32
        )
    return Affine(offset, scale)


@dataclass
class LoaderData:
    """Train/val :class:`~teamvla_data.loader.TeamDataLoader` pair of one rank."""

    train_loader: TeamDataLoader
    val_loader: TeamDataLoader | None
    normalization: Affine
    image_size: tuple[int, int]
    tasks: list[str]
    stats: dict[str, Any] | None

    @property
    def num_train_batches(self) -> int:
        """Micro-batches per epoch on this rank."""
        return len(self.train_loader.epoch_sampler)

    def train_batches(self, *, epoch: int, start_batch: int = 0) -> Iterator[Mapping[str, Any]]:
        """Batches ``start_batch ..`` of ``epoch``, in the sampler's (seed, epoch) order."""
        self.train_loader.load_state_dict({"epoch": epoch, "position": start_batch})
        it = iter(self.train_loader)
        # Starting a DataLoader iterator draws a base seed from the global torch RNG; do it
        # (with the first batch) in a forked RNG so where a run resumes never shifts that stream.
        with torch.random.fork_rng(devices=[]):
            first = next(it, None)
        return it if first is None else itertools.chain([first], it)

    def val_batches(self) -> Iterator[Mapping[str, Any]] | None:
        """The validation split in order (every sample once)."""
        return None if self.val_loader is None else iter(self.val_loader)

    def close(self) -> None:
        """Nothing to release explicitly (iterators shut their workers down when dropped)."""


def build_train_data(
    cfg: TrainConfig,
    *,
    dist_info: DistInfo = SINGLE_PROCESS,
    pin_memory: bool = False,
    stats: NormalizationStats | None = None,
) -> LoaderData:
    """Open the dataset of ``cfg.dataset`` for this rank: loaders, statistics, normalisation, image size.

    ``stats`` replaces the statistics computed from the data (DAgger keeps its
    demonstrations' statistics while the aggregate grows).
    """
    from teamvla_schema import SchemaError

    ds_cfg = cfg.dataset
    if pin_memory and not ds_cfg.pin_memory:
        ds_cfg = replace(ds_cfg, pin_memory=True)
    if stats is not None:
        # The loader refuses statistics computed over other episodes (their key names the
        # selection); these are given on purpose, so they take the key of this selection.
        own = make_dataloader(ds_cfg, "train", rank=dist_info.rank, world_size=dist_info.world_size)
        assert own.stats is not None
        stats = replace(stats, key=own.stats.key)
    train_loader = make_dataloader(
        ds_cfg, "train", stats=stats, rank=dist_info.rank, world_size=dist_info.world_size
    )
    train_ds = train_loader.multitask
    stats = train_loader.stats
    if len(train_loader.epoch_sampler) == 0:
        raise SchemaError(
            f"the training split has {len(train_ds)} samples, fewer than dataset.batch_size={ds_cfg.batch_size} "
            f"per rank ({dist_info.world_size} rank(s)) with drop_last: add episodes or lower the batch size"
        )
    val_loader = None
    if train_ds.val_records:
        val_loader = make_dataloader(
            ds_cfg, "val", stats=stats, rank=dist_info.rank, world_size=dist_info.world_size
        )
    image_size = (
        tuple(ds_cfg.image_size)
        if ds_cfg.image_size is not None
        else train_ds.field_shape(keys.RGB_A)[:2]  # (H, W) of (H, W, 3)
    )
    num_joints = train_ds.field_shape(keys.Q_A)[-1]
    if num_joints != cfg.model.num_joints:
        raise SchemaError(
            f"the dataset has {num_joints} joints per arm but model.num_joints is {cfg.model.num_joints}",
            field="model.num_joints",
        )
    fields = list(ds_cfg.stats_fields) if ds_cfg.normalize else []
    return LoaderData(
        train_loader=train_loader,
        val_loader=val_loader,
        normalization=affine_from_stats(stats, fields, num_joints),
        image_size=(int(image_size[0]), int(image_size[1])),
        tasks=list(train_ds.tasks),
        stats=stats.to_dict() if stats is not None else None,
    )
