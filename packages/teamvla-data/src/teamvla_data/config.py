"""The ``dataset:`` config section: :class:`DatasetConfig`.

Validated strictly (unknown keys, types, ranges, cross-field rules) with
:func:`teamvla_schema.config.from_dict`::

    loaded = load_config("configs/train_bc.yaml")
    cfg = DatasetConfig.from_loaded(loaded)        # or:
    cfg = from_dict(DatasetConfig, loaded.data["dataset"], key="dataset", config=loaded)

Keys are stable: the trainer stores this section in checkpoints. Every field is
documented in ``configs/train_bc.yaml`` and ``docs/dataset.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from teamvla_schema.config import LoadedConfig, field, from_dict

#: Fields normalisation statistics may cover.
STATS_FIELD_CHOICES = ("q_a", "q_b", "action_a", "action_b", "grip_a", "grip_b")

TaskWeighting = Literal["uniform", "proportional", "explicit"]
OnError = Literal["raise", "skip"]
NormalizeMode = Literal["mean_std", "min_max"]
#: ``true``: shuffle (cache-aware when the decode cache cannot hold everything); ``false``:
#: sequential; ``uniform``: a plain uniform shuffle whatever the cache.
Shuffle = bool | Literal["uniform"]


@dataclass
class AugmentConfig:
    """Image augmentation applied in the loader (seeded per sample; train split only)."""

    enabled: bool = field(default=False, doc="Apply the augmentations below to training batches.")
    shift_pixels: int = field(
        default=4,
        ge=0,
        doc="Maximum random shift in pixels (edge-replicate pad, then crop back); 0 = off.",
    )
    color_jitter: float = field(
        default=0.0,
        ge=0.0,
        le=1.0,
        doc="Strength s of colour jitter: brightness, contrast and saturation factors uniform in [1-s, 1+s]; 0 = off.",
    )


@dataclass
class DatasetConfig:
    """Which episodes to read and how to turn them into training batches."""

    # --- which episodes -------------------------------------------------------------
    roots: list[str] = field(
        default_factory=list,
        doc="Episode roots (directories of <task>/<episode_id>.npz), relative to the cwd.",
    )
    tasks: list[str] | None = field(
        default=None, doc="Task slugs to keep; null = every task found."
    )
    success_only: bool = field(default=False, doc="Keep only episodes whose metadata says success.")
    max_episodes_per_task: int | None = field(
        default=None,
        ge=1,
        doc="Cap per task (first K by a hash seeded with split_seed); null = no cap.",
    )
    on_error: OnError = field(
        default="raise",
        doc="A corrupt/invalid episode file: 'raise' an error naming it, or 'skip' it with a warning.",
    )

    # --- train/val split (by episode, never by step) ----------------------------------
    val_fraction: float = field(
        default=0.1, ge=0.0, lt=1.0, doc="Fraction of each task's episodes held out."
    )
    split_seed: int = field(
        default=0, doc="Seed of the episode hash deciding the split and the per-task cap."
    )

    # --- temporal windows ------------------------------------------------------------
    obs_history: int = field(
        default=0, ge=0, doc="Previous frames given with the current one (To = obs_history + 1)."
    )
    action_horizon: int = field(
        default=1, ge=1, doc="Future action steps per sample, t .. t+Ha-1 (Ha)."
    )

    # --- images ----------------------------------------------------------------------
    image_size: list[int] | None = field(
        default=None,
        doc="Resize images to [H, W] pixels in the loader (bilinear); null = keep the recorded size.",
    )
    augment: AugmentConfig = field(
        default_factory=AugmentConfig, doc="Training-time image augmentation."
    )

    # --- normalisation ---------------------------------------------------------------
    normalize: bool = field(
        default=True, doc="Normalise stats_fields with statistics of the train split."
    )
    normalize_mode: NormalizeMode = field(
        default="mean_std", doc="'mean_std': (x-mean)/std; 'min_max': map [min, max] to [-1, 1]."
    )
    stats_fields: list[str] = field(
        default_factory=lambda: ["q_a", "q_b", "action_a", "action_b"],
        doc="Fields that statistics are computed for and normalised.",
    )

    # --- batching and workers --------------------------------------------------------
    batch_size: int = field(default=64, ge=1, doc="Samples per batch (per rank when distributed).")
    num_workers: int = field(
        default=0, ge=0, doc="DataLoader worker processes; 0 = load in the main process."
    )
    shuffle: Shuffle = field(
        default=True,
        doc="Shuffle samples each epoch (seeded by seed and the epoch): true (cache-aware when "
        "cache_max_bytes cannot hold every decoded image), false (sequential) or 'uniform' "
        "(plain uniform shuffle whatever the cache).",
    )
    seed: int = field(default=0, doc="Seed of shuffling, task sampling and augmentation.")
    drop_last: bool = field(default=True, doc="Drop the last incomplete batch of an epoch.")
    pin_memory: bool = field(
        default=False, doc="Pin batches in page-locked memory (faster host-to-GPU copies)."
    )
    persistent_workers: bool = field(
        default=False, doc="Keep worker processes alive between epochs."
    )
    prefetch_factor: int | None = field(
        default=None, ge=1, doc="Batches each worker loads ahead; null = torch default (2)."
    )

    # --- task balancing --------------------------------------------------------------
    task_weighting: TaskWeighting = field(
        default="proportional",
        doc="'proportional': every sample once per epoch; 'uniform': tasks drawn equally often; "
        "'explicit': tasks drawn with task_weights.",
    )
    task_weights: dict[str, float] = field(
        default_factory=dict,
        doc="Relative draw weight per task slug (task_weighting: explicit only).",
    )
    samples_per_epoch: int | None = field(
        default=None,
        ge=1,
        doc="Samples per epoch for weighted sampling; null = the number of samples.",
    )

    # --- storage ---------------------------------------------------------------------
    use_cache: bool = field(
        default=True,
        doc="Read from the uncompressed memory-mapped column cache (built once); false = decompress into RAM.",
    )
    cache_dir: str | None = field(
        default=None, doc="Where caches and statistics live; null = <first root>/.teamvla/cache."
    )
    cache_max_bytes: int | None = field(
        default=None,
        ge=0,
        doc="Bytes of decoded images kept in memory, shared by the loader's workers (LRU); images "
        "are then decoded from the episode files on demand and never copied to disk. null = "
        "unbounded: every field, images included, is copied once into the column cache.",
    )

    def validate(self) -> None:
        """Cross-field checks (run by :func:`teamvla_schema.config.from_dict`)."""
        if not self.roots:
            raise ValueError("roots: name at least one episode root")
        if self.tasks is not None and not self.tasks:
            raise ValueError("tasks: an empty list selects nothing; use null for every task")
        unknown = sorted(set(self.stats_fields) - set(STATS_FIELD_CHOICES))
        if unknown:
            raise ValueError(
                f"stats_fields: unknown field(s) {unknown}; choose from {list(STATS_FIELD_CHOICES)}"
            )
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
            raise ValueError(
                f"image_size: expected [H, W] of positive ints, received {self.image_size}"
            )
        if self.task_weighting == "explicit":
            if not self.task_weights:
                raise ValueError("task_weights: required when task_weighting is 'explicit'")
            if (
                any(w < 0 for w in self.task_weights.values())
                or sum(self.task_weights.values()) <= 0
            ):
                raise ValueError("task_weights: weights must be >= 0 with a positive sum")
        elif self.task_weights:
            raise ValueError(
                f"task_weights: only used with task_weighting 'explicit' (it is {self.task_weighting!r})"
            )
        if self.task_weighting != "proportional" and self.shuffle is False:
            raise ValueError("task_weighting: weighted task sampling needs shuffle: true")
        if self.num_workers == 0 and (self.persistent_workers or self.prefetch_factor is not None):
            raise ValueError("persistent_workers / prefetch_factor need num_workers > 0")

    @classmethod
    def from_loaded(cls, loaded: LoadedConfig) -> DatasetConfig:
        """Validate the ``dataset`` section of a loaded config file."""
        return from_dict(cls, loaded.data.get("dataset"), key="dataset", config=loaded)


def as_dataset_config(cfg: DatasetConfig | LoadedConfig | Mapping[str, Any]) -> DatasetConfig:
    """Accept a :class:`DatasetConfig`, a loaded config file, or the mapping of its ``dataset`` section."""
    if isinstance(cfg, DatasetConfig):
        return cfg
    if isinstance(cfg, LoadedConfig):
        return DatasetConfig.from_loaded(cfg)
    if isinstance(cfg, Mapping):
        return from_dict(DatasetConfig, cfg, key="dataset")
    raise TypeError(
        f"expected DatasetConfig, LoadedConfig or a mapping, received {type(cfg).__name__}"
    )
