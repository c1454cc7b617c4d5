"""Checkpoint files of a run: names, the ``latest`` pointer, keep-last-K, finding where to resume.

Layout of a run directory::

    <run_dir>/config.yaml                       resolved config (written before training)
    <run_dir>/metrics.jsonl                     one JSON object per log interval / validation
    <run_dir>/checkpoints/<task>/epoch_0001.ckpt              end of epoch 1
    <run_dir>/checkpoints/<task>/epoch_0002_step_00000150.ckpt  mid-epoch (ckpt_every / final)
    <run_dir>/checkpoints/<task>/latest         JSON pointer to the newest checkpoint

``<task>`` is the single task trained on, or ``multi``. Every file is written
atomically (temporary file + fsync + rename), so a killed run leaves either
the previous or the new checkpoint and pointer, never a torn one; a failed
write (disk full) leaves no temporary file behind.

The pointer is ``{"checkpoint": name, "step", "epoch", "history": [names]}``.
``history`` is the run's own list of kept checkpoints: keep-last-K deletes only
names from it, and only while the pointer still names the checkpoint the run
continued from (see :func:`publish_checkpoint`). When the pointer is missing,
corrupt or names a file that does not load, :func:`find_resume_point` falls
back to the newest checkpoint that loads, or refuses with what it found.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teamvla_schema import SchemaError, load_checkpoint, read_checkpoint_info
from teamvla_schema.atomic import atomic_write_text

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
SUFFIX = ".ckpt"
#: Sections a checkpoint needs to continue training from it.
RESUMABLE_SECTIONS = ("model", "optimizer", "scheduler", "training_state")

_NAME = re.compile(r"epoch_\d{4,}(?:_step_\d{8,})?" + re.escape(SUFFIX))


class CheckpointWriteError(SchemaError):
    """A checkpoint or its ``latest`` pointer could not be written (disk full, quota, I/O error).

    A :class:`~teamvla_schema.SchemaError`, so that the ``teamvla`` command
    prints it as one line; the :class:`OSError` is its ``__cause__``.
    """


def task_dir_name(tasks: Sequence[str]) -> str:
    """``<task>`` part of the checkpoint path: the single task, or ``multi``."""
    unique = sorted(set(tasks))
    return unique[0] if len(unique) == 1 else "multi"


def checkpoint_name(*, epoch: int, step: int | None = None) -> str:
    """``epoch_0003.ckpt`` (end of epoch 3) or ``epoch_0003_step_00000150.ckpt`` (inside epoch 3)."""
    if step is None:
        return f"epoch_{epoch:04d}{SUFFIX}"
    return f"epoch_{epoch:04d}_step_{step:08d}{SUFFIX}"


def is_checkpoint_name(name: object) -> bool:
    """True for a bare file name the trainer writes (``epoch_0003[_step_00000150].ckpt``)."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def checkpoint_files(ckpt_dir: Path) -> list[Path]:
    """The checkpoint files of a directory, by name (unfinished temporary files excluded)."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.iterdir() if is_checkpoint_name(p.name) and p.is_file())


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _pointer_problem(data: object) -> str | None:
    """What is wrong with a parsed pointer, or None."""
    if not isinstance(data, dict):
        return f"expected a JSON object, found {type(data).__name__}"
    if not is_checkpoint_name(data.get("checkpoint")):
        return f"'checkpoint' is {_short(data.get('checkpoint'))}, not a name like epoch_0001.ckpt"
    for key in ("step", "epoch"):
        if not _is_count(data.get(key)):
            return f"'{key}' is {_short(data.get(key))}, not an integer >= 0"
    history = data.get("history")
    if not isinstance(history, list) or not all(is_checkpoint_name(n) for n in history):
        return f"'history' is {_short(history)}, not a list of checkpoint file names"
    return None


def read_latest(ckpt_dir: Path) -> dict[str, Any] | None:
    """The ``latest`` pointer of a checkpoint directory, or None when there is none.

    Raises :class:`SchemaError` when it is unreadable or malformed (not JSON,
    wrong types, names that are not checkpoint file names).
    """
    pointer = ckpt_dir / LATEST
    if not pointer.is_file():
        return None
    advice = (
        "`teamvla train --resume auto` rebuilds it from the checkpoints present; "
        "or pass a .ckpt file directly"
    )
    try:
        data = json.loads(pointer.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SchemaError(
            f"corrupt checkpoint pointer, not JSON ({exc}); {advice}", path=pointer
        ) from None
    problem = _pointer_problem(data)
    if problem is not None or not isinstance(data, dict):
        raise SchemaError(f"corrupt checkpoint pointer: {problem}; {advice}", path=pointer)
    return data


def _present(ckpt_dir: Path) -> str:
    names = [p.name for p in checkpoint_files(ckpt_dir)]
    if not names:
        return "no checkpoint files are present"
    return f"checkpoint files present: {', '.join(names)}"


def latest_checkpoint(ckpt_dir: Path) -> Path:
    """The existing file the ``latest`` pointer of ``ckpt_dir`` names; SchemaError otherwise."""
    pointer = read_latest(ckpt_dir)
    if pointer is None:
        raise SchemaError(
            f"no '{LATEST}' checkpoint pointer ({_present(ckpt_dir)}); pass a .ckpt file directly",
            path=ckpt_dir,
        )
    target = ckpt_dir / pointer["checkpoint"]
    if not target.is_file():
        raise SchemaError(
            f"the pointer names {pointer['checkpoint']}, which does not exist ({_present(ckpt_dir)}); "
            "pass a .ckpt file directly, or `teamvla train --resume auto` to continue from the newest one",
            path=ckpt_dir / LATEST,
        )
    return target


def publish_checkpoint(
    ckpt_dir: Path, name: str, *, step: int, epoch: int, keep_last: int, parent: str | None
) -> list[str]:
    """Point ``latest`` at ``name`` and delete this run's checkpoints beyond the newest ``keep_last``.

    The run's history (the kept names) lives in the pointer. It continues only
    when the current pointer names ``parent``, the checkpoint of this directory
    that the run resumed from or wrote last; otherwise (no parent, another
    run's pointer, a missing or corrupt pointer) a new history starts with
    ``name`` and nothing is deleted. Only names from the history are ever
    deleted, never ``name``. Returns the deleted names.
    """
    if not is_checkpoint_name(name):
        raise ValueError(f"not a checkpoint file name: {name!r}")
    try:
        previous = read_latest(ckpt_dir)
    except SchemaError as exc:
        log.warning("%s; starting a new checkpoint history (no older file will be deleted)", exc)
        previous = None
    history: list[str] = []
    if previous is not None and parent is not None and previous["checkpoint"] == parent:
        for old in previous["history"]:
            if old != name and old not in history:
                history.append(old)
    history.append(name)
    keep, drop = history[-keep_last:], history[:-keep_last]
    pointer = {"checkpoint": name, "step": step, "epoch": epoch, "history": keep}
    atomic_write_text(ckpt_dir / LATEST, json.dumps(pointer, indent=1) + "\n")
    deleted = []
    for old in drop:
        try:
            (ckpt_dir / old).unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:  # pruning is housekeeping: never fail a run over it
            log.warning("could not delete old checkpoint %s: %s", ckpt_dir / old, exc)
            continue
        deleted.append(old)
    return deleted


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file from a ``.ckpt`` path, a ``latest`` pointer, a checkpoint directory or a run directory."""
    p = Path(path)
    if p.is_file():
        if p.name == LATEST:
            return latest_checkpoint(p.parent)
        return p
    if p.is_dir():
        if (p / LATEST).is_file():
            return latest_checkpoint(p)
        pointers = (
            sorted((p / CHECKPOINT_DIR).glob(f"*/{LATEST}"))
            if (p / CHECKPOINT_DIR).is_dir()
            else []
        )
        if pointers:
            # Several task directories: the one whose newest checkpoint is most recent.
            targets = [latest_checkpoint(q.parent) for q in pointers]
            return max(targets, key=lambda t: t.stat().st_mtime_ns)
        raise SchemaError(
            f"no '{LATEST}' checkpoint pointer in this directory or its {CHECKPOINT_DIR}/*/", path=p
        )
    raise SchemaError("no such checkpoint file or run directory", path=p)


# --------------------------------------------------------------------------- where to resume


def checkpoint_step(path: Path) -> int:
    """The optimiser step of a training checkpoint, read from its header alone (no tensor data)."""
    structure = read_checkpoint_info(path).structure
    ts = structure.get("training_state")
    if not isinstance(ts, dict) or not _is_count(ts.get("step")):
        raise SchemaError("not a resumable training checkpoint (no training_state.step)", path=path)
    return int(ts["step"])


def load_resumable(path: Path) -> dict[str, Any]:
    """Load a checkpoint completely and check that training can continue from it."""
    ckpt = load_checkpoint(path)
    for key in RESUMABLE_SECTIONS:
        if key not in ckpt:
            raise SchemaError(
                f"not a resumable training checkpoint (no '{key}' section)", path=path
            )
    if not _is_count((ckpt["training_state"] or {}).get("step")):
        raise SchemaError("not a resumable training checkpoint (no training_state.step)", path=path)
    return ckpt


@dataclass
class ResumePoint:
    """The checkpoint ``--resume auto`` continues from, loaded, and what was passed over on the way."""

    path: Path
    checkpoint: dict[str, Any]
    #: Pointer to write before training when ``latest`` was missing, corrupt or named a bad file.
    repaired_pointer: dict[str, Any] | None = None
    #: ``"<what>: <why>"`` for the pointer and each file that was passed over.
    skipped: list[str] = field(default_factory=list)


def _listing(items: Sequence[str], limit: int = 4) -> str:
    shown = "; ".join(items[:limit])
    return shown + (f"; and {len(items) - limit} more" if len(items) > limit else "")


def find_resume_point(ckpt_dir: Path) -> ResumePoint | None:
    """Where ``--resume auto`` continues in ``ckpt_dir``; None when it holds no checkpoint and no pointer.

    The pointer's checkpoint when it loads. Otherwise (pointer missing,
    corrupt, or naming a deleted or corrupt file) the newest checkpoint by
    step that loads completely, with a rebuilt pointer whose history keeps
    only the old pointer's names that still load (so keep-last-K never deletes
    a file the run did not list). Raises :class:`SchemaError`, changing
    nothing, when there are checkpoint files or a pointer but none loads.
    """
    pointer: dict[str, Any] | None = None
    skipped: list[str] = []
    pointer_exists = (ckpt_dir / LATEST).exists()
    try:
        pointer = read_latest(ckpt_dir)
    except SchemaError as exc:
        skipped.append(f"'{LATEST}': {exc.reason.split('; ')[0]}")
    files = checkpoint_files(ckpt_dir)
    if not pointer_exists and not files:
        return None
    tried: set[str] = set()
    if pointer is not None:
        target = ckpt_dir / pointer["checkpoint"]
        tried.add(target.name)
        try:
            return ResumePoint(target, load_resumable(target))
        except SchemaError as exc:
            why = "missing" if not target.exists() else exc.reason
            skipped.append(f"'{LATEST}' names {target.name}: {why}")
    elif not pointer_exists:
        skipped.append(f"'{LATEST}': missing")

    steps: dict[str, int] = {}
    for f in files:
        if f.name in tried:
            continue
        try:
            steps[f.name] = checkpoint_step(f)
        except SchemaError as exc:
            skipped.append(f"{f.name}: {exc.reason}")
    order = sorted(steps, key=lambda n: (steps[n], (ckpt_dir / n).stat().st_mtime_ns), reverse=True)
    for name in order:
        path = ckpt_dir / name
        try:
            ckpt = load_resumable(path)
        except SchemaError as exc:
            skipped.append(f"{name}: {exc.reason}")
            steps.pop(name)
            continue
        ts = ckpt["training_state"]
        kept = [
            n
            for n in (pointer["history"] if pointer is not None else [])
            if n != name and n in steps and steps[n] < steps[name]
        ]
        repaired = {
            "checkpoint": name,
            "step": int(ts["step"]),
            "epoch": int(ts.get("epoch", 0)),
            "history": [*kept, name],
        }
        return ResumePoint(path, ckpt, repaired_pointer=repaired, skipped=skipped)

    if files:
        found = f"none of the {len(files)} checkpoint file(s) loads"
    else:
        found = "there are no checkpoint files (epoch_*.ckpt)"
    raise SchemaError(
        f"cannot resume: {found} ({_listing(skipped)}); nothing was changed. Resume from a good "
        f"checkpoint with --resume PATH, restore or move the broken files out of this directory, "
        f"or start fresh in a new --out directory (or after deleting the run directory)",
        path=ckpt_dir,
    )


def write_pointer(ckpt_dir: Path, pointer: Mapping[str, Any]) -> None:
    """Write a ``latest`` pointer atomically (used to repair one before a resumed run continues)."""
    problem = _pointer_problem(dict(pointer))
    if problem is not None:
        raise ValueError(f"refusing to write a bad pointer: {problem}")
    atomic_write_text(ckpt_dir / LATEST, json.dumps(dict(pointer), indent=1) + "\n")
