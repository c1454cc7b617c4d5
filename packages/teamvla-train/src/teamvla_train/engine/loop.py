"""The training engine: one loop that drives any algorithm. Read it top to bottom:

    setup        config -> device, process group, threads, seeds, the algorithm (its data,
                 networks, optimisers), (resume: config check, algorithm state, RNGs),
                 metrics logger
    loop         for each update:
                   algorithm.train_step()                 (timed by the algorithm: data, compute)
                   log every trainer.log_every updates    (the only host syncs; a plain
                                                          stderr line when there is no bar)
                   validate every trainer.val_every updates
                   checkpoint every trainer.ckpt_every updates, or when a data pass ends
    finish       final validation and checkpoint, TrainResult

The engine knows nothing of losses: an algorithm (:mod:`teamvla_train.algos`,
chosen by ``trainer.algo``) owns networks, optimisers, data and update rule.
Resuming (``resume=PATH`` or ``"auto"``) restores the algorithm's state and
every RNG, so a continued run computes what an uninterrupted one would have;
see :mod:`teamvla_train.engine.resume` for what ``"auto"`` does with missing or
broken checkpoints. Distributed runs (``torchrun``) shard data per rank; only
rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from teamvla_schema import SchemaError
from teamvla_schema import save_checkpoint as schema_save_checkpoint
from teamvla_schema.config import LoadedConfig, save_resolved_config
from tqdm import tqdm

from teamvla_train.algos import make_algorithm
from teamvla_train.algos.base import Algorithm, Context
from teamvla_train.config import TrainConfig, resolve_train_config
from teamvla_train.data import TrainData
from teamvla_train.engine import checkpointing as ckpt_io
from teamvla_train.engine.ckpt_write import remove_stale_temporaries, write_checkpoint
from teamvla_train.engine.device import (
    autocast_dtype,
    default_num_threads,
    resolve_device,
    seed_everything,
)
from teamvla_train.engine.distributed import DistInfo, init_distributed, shutdown_distributed
from teamvla_train.engine.loggers import require_packages
from teamvla_train.engine.memory import retain_freed_memory
from teamvla_train.engine.metrics import MetricsLogger
from teamvla_train.engine.progress import Interval, ProgressLines, is_terminal
from teamvla_train.engine.resume import check_resume_config, find_resume, show_changes
from teamvla_train.engine.rng import capture_rng_state, restore_rng_state

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"


@dataclass
class Engine:
    """Everything a run holds, built by :func:`setup` (composition; no trainer class hierarchy)."""

    cfg: TrainConfig
    run_dir: Path
    ckpt_dir: Path
    ctx: Context
    algo: Algorithm
    logger: MetricsLogger
    step: int = 0  # updates done
    samples: int = 0  # samples learned from, all ranks together
    last_checkpoint: Path | None = None

    @property
    def dist_info(self) -> DistInfo:
        """This process's place in the process group."""
        return self.ctx.dist_info


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    run_dir: Path
    last_checkpoint: Path | None
    final_metrics: dict[str, float] = field(default_factory=dict)
    steps: int = 0


def setup(
    cfg: TrainConfig,
    *,
    run_dir: Path,
    device: str | None = None,
    resume: str | os.PathLike[str] | None = None,
    data: TrainData | None = None,
) -> Engine:
    """Build the whole run in a fixed order (see the module docstring)."""
    require_packages(cfg.trainer.loggers)  # a missing logger package stops the run before any work
    requested = device or cfg.run.device
    try:
        device_type = torch.device(requested).type
    except RuntimeError:
        raise SchemaError(f"unknown device {requested!r} (expected cpu, cuda or cuda:N)") from None
    if device_type == "cuda" and not torch.cuda.is_available():
        raise SchemaError(
            f"device {requested!r} requested but CUDA is not available (use --device cpu)"
        )
    dist_info = init_distributed(device_type)
    dev = resolve_device(requested, dist_info)
    if cfg.trainer.retain_freed_memory:
        retain_freed_memory()
    if dev.type == "cpu":
        torch.set_num_threads(
            cfg.trainer.num_threads or default_num_threads(dist_info.local_world_size)
        )
    seed_everything(cfg.run.seed + dist_info.rank)
    ctx = Context(
        cfg=cfg,
        run_dir=run_dir,
        device=dev,
        dist_info=dist_info,
        amp_dtype=autocast_dtype(cfg.trainer.precision, dev),
    )
    algo = make_algorithm(cfg.trainer.algo, ctx, data=data)
    ckpt_dir = run_dir / ckpt_io.CHECKPOINT_DIR / ckpt_io.task_dir_name(algo.tasks)
    point = find_resume(resume, run_dir, ckpt_dir)
    # The logger only once the run is accepted: a refused resume leaves the run directory as it was.
    # Its backends (TensorBoard, W&B) open on the first record.
    logger = MetricsLogger(
        run_dir,
        enabled=dist_info.is_main,
        loggers=cfg.trainer.loggers,
        config=cfg.resolved,
        resumed_at=None if point is None else int(point.checkpoint["training_state"]["step"]),
    )
    ctx.logger = logger
    engine = Engine(cfg=cfg, run_dir=run_dir, ckpt_dir=ckpt_dir, ctx=ctx, algo=algo, logger=logger)
    if point is not None:
        _restore(engine, point)
    if dist_info.is_main:
        stale = remove_stale_temporaries(ckpt_dir)
        if stale:
            log.info("removed unfinished checkpoint writes of killed runs: %s", ", ".join(stale))
        net = algo.policy_network()
        logger.write(
            {
                "event": "resume" if point is not None else "start",
                "step": engine.step,
                "checkpoint": str(point.path) if point is not None else None,
                "algo": algo.name,
                "model": cfg.model.name,
                "parameters": sum(p.numel() for p in net.parameters() if p.requires_grad),
                "device": str(dev),
                "world_size": dist_info.world_size,
                "total_steps": algo.total_steps(),
            }
        )
    return engine


def _restore(engine: Engine, point: ckpt_io.ResumePoint) -> None:
    """Continue from a loaded checkpoint: config check, the algorithm's state, counters, RNGs."""
    cfg, ckpt = engine.cfg, point.checkpoint
    force = cfg.trainer.resume_force
    changes = check_resume_config(ckpt.get("config"), cfg.resolved, force=force, path=point.path)
    engine.algo.load_checkpoint_state(ckpt, path=point.path, force=force, changes=changes)
    if changes:
        log.warning(
            "trainer.resume_force: resuming %s with changed config: %s",
            point.path,
            show_changes(changes),
        )
    ts = ckpt["training_state"]
    engine.step = int(ts["step"])
    engine.samples = int(ts.get("samples", 0))
    restore_rng_state(ts["rng"])
    engine.last_checkpoint = point.path
    info = engine.dist_info
    if point.repaired_pointer is not None and info.is_main:
        # Only now that the checkpoint is accepted: 'latest' names it again.
        ckpt_io.write_pointer(point.path.parent, point.repaired_pointer)
    if info.rank:
        # Each rank continues with its own stream (rank 0's state was saved).
        torch.manual_seed(cfg.run.seed + info.rank + 1_000_003 * engine.step)
    log.info("resumed from %s at step %d", point.path, engine.step)


def save_checkpoint(engine: Engine, *, end_of_epoch: bool, metrics: Mapping[str, float]) -> None:
    """Rank 0 writes a checkpoint at the current step and updates ``latest`` (keep-last-K).

    A failed write (disk full, quota) raises :class:`~teamvla_train.engine.checkpointing.CheckpointWriteError`
    and leaves the previous checkpoint and pointer as they were (both are written atomically).
    """
    if not engine.dist_info.is_main:
        return
    algo, step = engine.algo, engine.step
    # After an epoch ends algo.epoch already counts it; inside an epoch name the one in progress.
    name = (
        ckpt_io.checkpoint_name(epoch=algo.epoch)
        if end_of_epoch
        else ckpt_io.checkpoint_name(epoch=algo.epoch + 1, step=step)
    )
    sections = algo.checkpoint_state()
    training_state = {
        "step": step,
        "samples": engine.samples,
        "rng": capture_rng_state(),
        **sections.get("training_state", {}),
    }
    extra = {
        **sections.get("extra", {}),
        "algo": algo.name,
        "task": ckpt_io.task_dir_name(algo.tasks),
        "tasks": list(algo.tasks),
        "metrics": dict(metrics),
        "torch_version": torch.__version__,
    }
    engine.last_checkpoint = write_checkpoint(
        engine.ckpt_dir,
        name,
        lambda path: schema_save_checkpoint(
            path,
            model=sections["model"],
            optimizer=sections.get("optimizer"),
            scheduler=sections.get("scheduler"),
            training_state=training_state,
            config=engine.cfg.resolved,
            stats=sections.get("stats"),
            extra=extra,
        ),
        step=step,
        epoch=algo.epoch,
        keep_last=engine.cfg.trainer.keep_last,
        previous=engine.last_checkpoint,
    )


def _validate(engine: Engine) -> dict[str, float]:
    out = engine.algo.validate()
    if out:
        engine.logger.write(
            {"split": "val", "step": engine.step, "epoch": engine.algo.epoch, **out}
        )
    return out


def _final_metrics(train: Mapping[str, float], val: Mapping[str, float]) -> dict[str, float]:
    out = {f"train_{k}": v for k, v in train.items()}
    out.update({f"val_{k}": v for k, v in val.items()})
    return out


def run(engine: Engine, *, progress: bool = True) -> TrainResult:
    """The main loop over updates (see the module docstring for the order)."""
    cfg, algo, info = engine.cfg, engine.algo, engine.dist_info
    total = algo.total_steps()
    # A bar only on a terminal; otherwise (--no-progress, logs, CI) one plain line per log interval.
    show_bar = progress and info.is_main and is_terminal(sys.stderr)
    lines = ProgressLines(total, engine.step) if info.is_main and not show_bar else None
    bar = tqdm(total=total, initial=engine.step, disable=not show_bar, unit="step", dynamic_ncols=True)  # fmt: skip
    interval = Interval()
    last_train: dict[str, float] = {}
    last_val: dict[str, float] = {}
    checkpointed_at = engine.step if engine.last_checkpoint is not None else -1
    algo.train()
    while engine.step < total:
        out = algo.train_step()
        engine.step += 1
        engine.samples += out.samples
        interval.add(out.metrics, samples=out.samples, data_time=out.data_time, compute_time=out.compute_time)  # fmt: skip
        for event in out.events:
            engine.logger.write({"step": engine.step, **event})
        bar.update(1)
        step = engine.step
        if step % cfg.trainer.log_every == 0 or step == total:
            last_train = interval.summary(info)
            interval.reset()
            record = {"split": "train", "step": step, "epoch": algo.epoch, "lr": algo.lr()}
            engine.logger.write({**record, **last_train})
            bar.set_postfix(loss=f"{last_train.get('loss', float('nan')):.4f}", sps=f"{last_train['samples_per_s']:.0f}")  # fmt: skip
            if lines is not None:
                lines.train(step, algo.epoch, last_train)
        if cfg.trainer.val_every and step % cfg.trainer.val_every == 0 and step < total:
            last_val = _validate(engine)
            if lines is not None:
                lines.val(step, last_val)
        periodic = bool(cfg.trainer.ckpt_every) and step % cfg.trainer.ckpt_every == 0
        if periodic or out.checkpoint or (out.epoch_end and not cfg.trainer.ckpt_every):
            save_checkpoint(engine, end_of_epoch=not periodic, metrics=_final_metrics(last_train, last_val))  # fmt: skip
            checkpointed_at = step
    bar.close()
    final_val = _validate(engine)
    if lines is not None:
        lines.val(engine.step, final_val)
    final = _final_metrics(last_train, final_val or last_val)
    if checkpointed_at != engine.step:
        save_checkpoint(engine, end_of_epoch=False, metrics=final)
    if info.is_main:
        engine.logger.write(
            {
                "event": "end",
                "step": engine.step,
                "checkpoint": str(engine.last_checkpoint),
                **final,
            }
        )
    engine.logger.close()
    return TrainResult(
        run_dir=engine.run_dir,
        last_checkpoint=engine.last_checkpoint,
        final_metrics=final,
        steps=engine.step,
    )


def train(
    cfg: TrainConfig | LoadedConfig | Mapping[str, Any],
    *,
    run_dir: str | os.PathLike[str],
    device: str | None = None,
    resume: str | os.PathLike[str] | None = None,
    progress: bool = True,
    data: TrainData | None = None,
) -> TrainResult:
    """Train with the algorithm of ``trainer.algo``; the Python entry point behind ``teamvla train``.

    ``cfg`` is a loaded config file, its plain mapping, or a validated
    :class:`TrainConfig`; it is validated completely before any work. The
    resolved config is saved as ``<run_dir>/config.yaml``. ``device`` overrides
    ``run.device``; ``resume`` is a checkpoint / run directory path or
    ``"auto"`` (continue ``run_dir`` if it has a checkpoint; without ``resume``
    a ``run_dir`` holding checkpoints is refused). ``data`` replaces the
    dataset loaders (tests and benchmarks use synthetic data). ``progress``
    draws a bar when stderr is a terminal; otherwise a plain line is printed
    every ``trainer.log_every`` steps.
    """
    train_cfg = resolve_train_config(cfg)
    run_path = Path(run_dir)
    engine = setup(train_cfg, run_dir=run_path, device=device, resume=resume, data=data)
    try:
        if engine.dist_info.is_main:
            save_resolved_config(run_path / CONFIG_FILE, train_cfg.resolved)
        return run(engine, progress=progress)
    finally:
        engine.logger.close(failed=True)  # a no-op after run() closed it; else the run failed
        engine.algo.close()
        shutdown_distributed(engine.dist_info)
