"""Resuming a run: which checkpoint, whether its config may continue, whether its weights fit.

``"auto"`` never starts over on top of a run's checkpoints: with a missing or
corrupt ``latest`` pointer it continues from the newest checkpoint that loads,
or refuses (see :func:`teamvla_train.engine.checkpointing.find_resume_point`);
a fresh run into a directory holding checkpoints is refused. The config must
match the checkpoint's except for :data:`RESUME_MAY_DIFFER`, unless
``trainer.resume_force`` is set and every weight keeps its shape.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from teamvla_schema import SchemaError
from torch import nn

from teamvla_train.config import resolve_train_config
from teamvla_train.engine import checkpointing as ckpt_io

log = logging.getLogger(__name__)


#: Config keys (dotted; a section name covers the whole section) that may differ between a
#: checkpoint and the run resuming from it: where and how fast the run computes and loads data,
#: how long it trains, how often it validates, checkpoints and logs, and evaluation. A difference
#: in any other key refuses the resume unless ``trainer.resume_force`` is set.
RESUME_MAY_DIFFER: tuple[str, ...] = (
    "run.device",
    "run.log_level",
    "run.output_dir",
    "dataset.num_workers",
    "dataset.pin_memory",
    "dataset.persistent_workers",
    "dataset.prefetch_factor",
    "dataset.use_cache",
    "dataset.cache_dir",
    "trainer.max_steps",
    "trainer.epochs",
    "trainer.precision",
    "trainer.compile",
    "trainer.num_threads",
    "trainer.retain_freed_memory",
    "trainer.prefetch",
    "trainer.val_every",
    "trainer.val_batches",
    "trainer.ckpt_every",
    "trainer.keep_last",
    "trainer.log_every",
    "trainer.loggers",
    "trainer.tensorboard",  # the deprecated alias of trainer.loggers, in older checkpoints
    "trainer.resume_force",
    "eval",
)

_ABSENT = object()

#: Config sections read by one algorithm only (``trainer.algo``).
ALGORITHM_SECTIONS = ("dagger", "sac", "awac")


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"a.b.c": value}`` (lists stay whole values)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _may_differ(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUME_MAY_DIFFER)


def _with_defaults(saved: Mapping[str, Any]) -> Mapping[str, Any]:
    """A checkpoint's config with the defaults of this version filled in (keys added since)."""
    try:
        return resolve_train_config(saved).resolved
    except (SchemaError, ValueError, TypeError):
        return saved  # written by another version that no longer validates: compare as saved


def resume_config_changes(
    saved: Mapping[str, Any], now: Mapping[str, Any]
) -> list[tuple[str, Any, Any]]:
    """``(dotted key, checkpoint value, new value)`` for every key outside :data:`RESUME_MAY_DIFFER` that differs.

    A key missing on one side has the value ``"(absent)"`` there. The sections of
    algorithms other than the run's (``dagger`` in a ``bc`` run) do not matter.
    """
    old, new = _flatten(_with_defaults(saved)), _flatten(now)
    algo = (now.get("trainer") or {}).get("algo", "bc")
    unused = tuple(f"{name}." for name in ALGORITHM_SECTIONS if name != algo)
    changes = []
    for key in sorted(set(old) | set(new)):
        if _may_differ(key) or key.startswith(unused):
            continue
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if a != b:
            changes.append(
                (key, "(absent)" if a is _ABSENT else a, "(absent)" if b is _ABSENT else b)
            )
    return changes


def _show(value: Any) -> str:
    if isinstance(value, str) and value == "(absent)":
        return value
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def show_changes(changes: Sequence[tuple[str, Any, Any]]) -> str:
    return ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, a, b in changes)


def weight_mismatches(saved: Mapping[str, Any], model: nn.Module) -> list[str]:
    """Tensors of ``saved`` that are missing from ``model``, extra, or of another shape."""
    want = model.state_dict()
    out = []
    for k in sorted(set(saved) | set(want)):
        if k not in want:
            out.append(f"{k} (only in the checkpoint)")
        elif k not in saved:
            out.append(f"{k} (not in the checkpoint)")
        elif tuple(saved[k].shape) != tuple(want[k].shape):
            out.append(f"{k} {tuple(saved[k].shape)} -> {tuple(want[k].shape)}")
    return out


def check_resume_config(
    saved_cfg: Any, now: Mapping[str, Any], *, force: bool, path: Path
) -> list[tuple[str, Any, Any]]:
    """The config changes against a checkpoint's config; refuse them unless ``force``."""
    changes = resume_config_changes(saved_cfg, now) if isinstance(saved_cfg, Mapping) else []
    if changes and not force:
        raise SchemaError(
            f"cannot resume: {len(changes)} config key(s) differ from the checkpoint's: "
            f"{show_changes(changes)}. To continue this run, use its values again; to start "
            "fresh, train into a new run directory (--out DIR, or another run.output_dir) or "
            "delete this one; to resume anyway with the new values, add trainer.resume_force=true "
            "(refused if the model's weight shapes change)",
            path=path,
        )
    return changes


def check_weights_fit(
    saved: Mapping[str, Any],
    module: nn.Module,
    *,
    changes: Sequence[tuple[str, Any, Any]],
    path: Path,
    what: str = "model",
) -> None:
    """Refuse a checkpoint whose ``what`` weights do not fit ``module`` (names and shapes)."""
    mismatches = weight_mismatches(saved, module)
    if not mismatches:
        return
    shown = "; ".join(mismatches[:3]) + (
        f"; and {len(mismatches) - 3} more" if len(mismatches) > 3 else ""
    )
    because = f" ({show_changes(changes)})" if changes else ""
    raise SchemaError(
        f"cannot resume, not even with trainer.resume_force: the {what} of this config{because} "
        f"does not fit the checkpoint's weights ({len(mismatches)} tensor(s): {shown}). Start "
        "fresh in a new run directory (--out DIR) or use the checkpoint's model settings",
        path=path,
    )


def refuse_fresh_over(ckpt_dir: Path, run_dir: Path) -> None:
    """A fresh run would overwrite (and prune) the checkpoints of an earlier one: refuse."""
    files = ckpt_io.checkpoint_files(ckpt_dir)
    if not files and not (ckpt_dir / ckpt_io.LATEST).exists():
        return
    raise SchemaError(
        f"already holds the checkpoints of an earlier run ({len(files)} checkpoint file(s)) and "
        "a fresh run would overwrite them: continue it with --resume auto (resume='auto'), or "
        f"start fresh in a new run directory (--out DIR) or after deleting {run_dir}",
        path=ckpt_dir,
    )


def find_resume(
    resume: str | os.PathLike[str] | None, run_dir: Path, ckpt_dir: Path
) -> ckpt_io.ResumePoint | None:
    """The checkpoint to continue from (loaded), or None for a fresh start.

    ``"auto"`` continues ``ckpt_dir`` (this run's task directory; else another
    task directory of ``run_dir``), falling back to the newest checkpoint that
    loads when ``latest`` is missing or bad (``setup`` then repairs the pointer).
    """
    if resume is None:
        refuse_fresh_over(ckpt_dir, run_dir)
        return None
    if str(resume) != "auto":
        path = ckpt_io.resolve_checkpoint(resume)
        return ckpt_io.ResumePoint(path, ckpt_io.load_resumable(path))
    point = ckpt_io.find_resume_point(ckpt_dir)
    if point is None:
        # The run's checkpoints may sit in another task directory (the dataset's tasks changed).
        others = [
            d
            for d in sorted((run_dir / ckpt_io.CHECKPOINT_DIR).glob("*"))
            if d.is_dir() and d.resolve() != ckpt_dir.resolve()
        ]
        found = [p for p in (ckpt_io.find_resume_point(d) for d in others) if p is not None]
        if not found:
            return None  # nothing to resume yet: start fresh
        point = max(
            found,
            key=lambda p: (int(p.checkpoint["training_state"]["step"]), p.path.stat().st_mtime_ns),
        )
    if point.repaired_pointer is not None:
        log.warning(
            "--resume auto: %s; continuing from %s (step %d), the newest checkpoint that loads",
            "; ".join(point.skipped),
            point.path,
            point.repaired_pointer["step"],
        )
    return point
