"""Typed config sections owned by teamvla-train: ``model``, ``optim``, ``scheduler``, ``trainer``, ``eval``.

Each section is a dataclass validated strictly with
:func:`teamvla_schema.config.from_dict` (unknown keys, types and ranges; a
``validate()`` method for cross-field checks). This module must stay importable
without torch: tools validate configs on machines that have no torch.

The observation history (``To - 1``) and the action horizon (``Ha``) are
properties of the data windows, so they live in the ``dataset`` section; the
model is built to match them and records them in every checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from teamvla_data.config import DatasetConfig
from teamvla_schema.config import (
    ConfigError,
    LoadedConfig,
    field,
    from_dict,
    resolved_data,
    to_dict,
    validate_config,
)
from teamvla_schema.run_config import RunConfig

from teamvla_train.algo_config import AwacConfig, DaggerConfig, EnvConfig, SacConfig
from teamvla_train.model_config import ModelConfig

DEFAULT_EVAL_TASKS = ("lift", "handoff", "drawer")
#: ``trainer.loggers`` values (see :mod:`teamvla_train.engine.loggers`).
LoggerName = Literal["jsonl", "tensorboard", "wandb"]


@dataclass
class OptimConfig:
    """AdamW settings."""

    lr: float = field(default=1e-3, gt=0.0, doc="Peak learning rate (after warm-up).")
    weight_decay: float = field(
        default=1e-4, ge=0.0, doc="Decoupled weight decay (not applied to biases/norms)."
    )
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999], doc="Adam betas.")
    eps: float = field(default=1e-8, gt=0.0, doc="Adam epsilon.")
    grad_clip: float = field(
        default=1.0, ge=0.0, doc="Clip the global gradient norm to this value (0: no clipping)."
    )

    def validate(self) -> None:
        """Cross-field checks."""
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), received {self.betas}")


@dataclass
class SchedulerConfig:
    """Learning-rate schedule: linear warm-up, then cosine decay (or constant)."""

    name: Literal["cosine", "constant"] = field(default="cosine", doc="Shape after warm-up.")
    warmup_steps: int = field(
        default=100, ge=0, doc="Optimiser steps of linear warm-up from 0 to the peak lr."
    )
    min_lr_ratio: float = field(
        default=0.05, ge=0.0, le=1.0, doc="Final lr as a fraction of the peak (cosine)."
    )


@dataclass
class TrainerConfig:
    """The training loop: length, precision, validation, checkpoints, logging.

    Batch size, workers and augmentation belong to the ``dataset`` section (the loader does them).
    """

    # --- algorithm --------------------------------------------------------------------
    algo: Literal["bc", "dagger", "sac", "awac"] = field(
        default="bc",
        doc="Training algorithm: bc (behaviour cloning), dagger, sac or awac (each with its own section).",
    )
    # --- length -----------------------------------------------------------------------
    max_steps: int = field(default=3000, ge=0, doc="Optimiser steps to train (0: use epochs).")
    epochs: int = field(default=0, ge=0, doc="Epochs to train when max_steps is 0.")
    grad_accum_steps: int = field(
        default=1, ge=1, doc="Micro-batches (of dataset.batch_size) accumulated per optimiser step."
    )

    # --- compute ----------------------------------------------------------------------
    precision: Literal["auto", "fp32", "bf16"] = field(
        default="auto", doc="auto: bf16 autocast on CUDA, fp32 on CPU."
    )
    compile: bool = field(
        default=False,
        doc="Wrap the model in torch.compile (bc and dagger; sac and awac refuse it).",
    )
    num_threads: int = field(
        default=0,
        ge=0,
        doc="torch intra-op threads on CPU (0: the cores available to this rank minus one, at least 1).",
    )
    retain_freed_memory: bool = field(
        default=True,
        doc="Keep freed memory in the process (glibc malloc thresholds; teamvla_train.engine.memory): "
        "fewer page faults per step; the process keeps its peak heap size.",
    )
    prefetch: int = field(
        default=2,
        ge=0,
        doc="Batches loaded ahead by a background thread, overlapping data and compute (0: off); "
        "used only with dataset.num_workers 0 (worker processes load ahead themselves).",
    )

    # --- validation -------------------------------------------------------------------
    val_every: int = field(
        default=500, ge=0, doc="Validation loss every N optimiser steps (0: only at the end)."
    )
    val_batches: int = field(
        default=8, ge=0, doc="Batches per validation pass (0: the whole held-out split)."
    )

    # --- checkpoints ------------------------------------------------------------------
    ckpt_every: int = field(
        default=0, ge=0, doc="Checkpoint every N optimiser steps (0: at the end of each epoch)."
    )
    keep_last: int = field(
        default=3, ge=1, doc="Checkpoints kept per run (older ones are deleted)."
    )
    resume_force: bool = field(
        default=False,
        doc="Resume even when config keys differ from the checkpoint's (the new values apply); "
        "refused anyway when the model's weight shapes changed.",
    )

    # --- logging ----------------------------------------------------------------------
    log_every: int = field(default=25, ge=1, doc="Write a metrics line every N optimiser steps.")
    loggers: list[LoggerName] = field(
        default_factory=lambda: ["jsonl"],
        doc="Where metrics, the config and pictures go: jsonl (<run>/metrics.jsonl, always "
        "written, added when not listed), tensorboard (<run>/tensorboard; teamvla-train[tensorboard]), "
        "wandb (offline run in <run>/wandb; teamvla-train[wandb]).",
    )
    tensorboard: bool = field(
        default=False, doc="Deprecated alias: true adds tensorboard to loggers (then reads false)."
    )

    def __post_init__(self) -> None:
        # jsonl always comes first; the deprecated switch of older configs and checkpoints folds in.
        names: list[LoggerName] = ["jsonl", *self.loggers]
        if self.tensorboard:
            names.append("tensorboard")
        self.loggers = list(dict.fromkeys(names))
        self.tensorboard = False

    def validate(self) -> None:
        """Cross-field checks."""
        if self.max_steps == 0 and self.epochs == 0:
            raise ValueError("set trainer.max_steps or trainer.epochs to a positive number")


@dataclass
class EvalConfig:
    """Evaluation of a trained policy: offline action error and closed-loop success in the simulator.

    The ``demo_*`` fields are read only by ``teamvla demo`` (the dataset it
    records when none exists yet); ``teamvla eval`` ignores them.
    """

    # --- closed loop ------------------------------------------------------------------
    tasks: list[str] = field(
        default_factory=lambda: list(DEFAULT_EVAL_TASKS), doc="Tasks to evaluate."
    )
    episodes_per_task: int = field(
        default=20,
        ge=1,
        doc="Rollouts per task, on held-out seeds (teamvla_data.sim.seeds.eval_seeds).",
    )
    replan_every: int = field(
        default=4, ge=1, doc="Execute this many steps of each predicted chunk, then re-plan."
    )
    temporal_ensemble: float = field(
        default=0.0,
        ge=0.0,
        doc="0: chunked execution (replan_every). >0: re-plan every step and average all chunks covering it, "
        "weights exp(-temporal_ensemble * age in steps).",
    )
    max_steps: int = field(
        default=0, ge=0, doc="Cap on steps per episode (0: each task's own step limit)."
    )
    language_swap: bool = field(
        default=True,
        doc="Also roll out each scene with its instruction swapped to name the other block, judged against the new one.",
    )
    batch_envs: int = field(
        default=10, ge=1, doc="Environments stepped together in one batched policy call."
    )
    every_env_steps: int = field(
        default=5000,
        ge=0,
        doc="Online algorithms (sac, awac): evaluate every N environment transitions, and at the end "
        "(0: only at the end).",
    )

    # --- offline ------------------------------------------------------------------------
    offline_batches: int = field(
        default=0,
        ge=0,
        doc="Validation-split batches for the offline action error (0: the whole split).",
    )

    # --- pictures -----------------------------------------------------------------------
    save_gifs: bool = field(
        default=True, doc="Save a GIF and a PNG strip of the first rollout of each task."
    )

    # --- teamvla demo only: the dataset it records when none exists -----------------------
    demo_episodes_per_task: int = field(default=100, ge=1, doc="Expert episodes recorded per task.")
    demo_workers: int = field(default=2, ge=1, doc="Processes recording episodes in parallel.")
    demo_image_codec: Literal["lossless", "video"] | None = field(
        default=None,
        doc="How those episodes store their camera fields: lossless (bit-exact H.264), video "
        "(lossy AV1) or null (plain arrays); as task.storage.image_codec of teamvla synth.",
    )
    demo_video_crf: int = field(
        default=30, ge=0, le=63, doc="Quality of demo_image_codec video (AV1 crf, lower is better)."
    )

    def validate(self) -> None:
        """Cross-field checks."""
        if not self.tasks:
            raise ValueError("eval.tasks must name at least one task")


# --------------------------------------------------------------------------- whole training config


@dataclass
class TrainConfig:
    """Every validated section a training run uses (``run`` and ``dataset`` come from their owners)."""

    run: RunConfig
    dataset: DatasetConfig
    model: ModelConfig
    optim: OptimConfig
    scheduler: SchedulerConfig
    trainer: TrainerConfig
    eval: EvalConfig
    dagger: DaggerConfig
    env: EnvConfig
    sac: SacConfig
    awac: AwacConfig
    resolved: dict[str, Any]  # the resolved config as plain data (what checkpoints store)


_SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "dataset": DatasetConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "scheduler": SchedulerConfig,
    "trainer": TrainerConfig,
    "eval": EvalConfig,
    "dagger": DaggerConfig,
    "env": EnvConfig,
    "sac": SacConfig,
    "awac": AwacConfig,
}


def resolve_train_config(cfg: LoadedConfig | Mapping[str, Any] | TrainConfig) -> TrainConfig:
    """Validate a loaded config file (or its plain mapping) and return the typed sections.

    Every section present is validated through :func:`teamvla_schema.config.validate_config`
    (so a config with e.g. a ``task:`` section is checked too); absent sections
    take their defaults, except ``dataset``, which must name episode roots.
    Raises :class:`teamvla_schema.config.ConfigError` naming file and key.
    """
    if isinstance(cfg, TrainConfig):
        return cfg
    loaded = (
        cfg if isinstance(cfg, LoadedConfig) else LoadedConfig.from_mapping(cfg, source="<config>")
    )
    typed: dict[str, Any] = dict(validate_config(loaded))
    for name, cls in _SECTIONS.items():
        if name not in typed:
            typed[name] = from_dict(cls, {}, key=name, config=loaded)
    resolved = resolved_data(loaded, typed)
    for name in _SECTIONS:
        resolved.setdefault(name, to_dict(typed[name]))
    sections = {name: typed[name] for name in _SECTIONS}
    ds = sections["dataset"]
    model = sections["model"]
    if ds.image_size is not None and min(ds.image_size) < model.image_size:
        raise ConfigError(
            f"model.image_size {model.image_size} exceeds the loader's image size {ds.image_size}",
            key="model.image_size",
            source=loaded.source_of("model.image_size"),
        )
    return TrainConfig(**sections, resolved=resolved)


__all__ = [
    "AwacConfig",
    "DaggerConfig",
    "EnvConfig",
    "EvalConfig",
    "ModelConfig",
    "OptimConfig",
    "SacConfig",
    "SchedulerConfig",
    "TrainConfig",
    "TrainerConfig",
    "resolve_train_config",
]
