"""teamvla-data: manifest-driven multi-task dataset, transforms, statistics and dataloader.

Everything works with numpy alone except :func:`make_dataloader`, which needs
the ``torch`` extra (``pip install 'teamvla-data[torch]'``). See docs/dataset.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from teamvla_data import batch
from teamvla_data.config import AugmentConfig, DatasetConfig
from teamvla_data.dataset import EpisodeInfo, MultiTaskDataset
from teamvla_data.index import EpisodeIndex, Skipped
from teamvla_data.sampler import EpochBatchSampler, IndexBatch
from teamvla_data.stats import FieldStats, NormalizationStats
from teamvla_data.transforms import (
    ColorJitter,
    Compose,
    ImagesToFloat,
    Normalize,
    RandomShift,
    Resize,
)

if TYPE_CHECKING:
    from teamvla_data.loader import TeamDataLoader

__version__ = "0.1.0"


def make_dataloader(cfg: Any, split: str = "train", **kwargs: Any) -> TeamDataLoader:
    """A torch DataLoader yielding batches of the batch contract (:mod:`teamvla_data.batch`).

    See :func:`teamvla_data.loader.make_dataloader` for the arguments. Raises
    ImportError naming the ``teamvla-data[torch]`` extra when torch is missing.
    """
    from teamvla_data._torch import require_torch

    require_torch("teamvla_data.make_dataloader")
    from teamvla_data.loader import make_dataloader as _make_dataloader

    return _make_dataloader(cfg, split, **kwargs)  # type: ignore[arg-type]


__all__ = [
    "AugmentConfig",
    "ColorJitter",
    "Compose",
    "DatasetConfig",
    "EpisodeIndex",
    "EpisodeInfo",
    "EpochBatchSampler",
    "FieldStats",
    "ImagesToFloat",
    "IndexBatch",
    "MultiTaskDataset",
    "NormalizationStats",
    "Normalize",
    "RandomShift",
    "Resize",
    "Skipped",
    "batch",
    "make_dataloader",
]
