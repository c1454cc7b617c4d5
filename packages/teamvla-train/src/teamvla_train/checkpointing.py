"""Checkpoint files of a run: names, the ``latest`` pointer, keep-last-K, RNG state capture.

Layout of a run directory::

    <run_dir>/config.yaml                       resolved config (written before training)
    <run_dir>/metrics.jsonl                     one JSON object per log interval / validation
    <run_dir>/checkpoints/<task>/epoch_0001.ckpt              end of epoch 1
    <run_dir>/checkpoints/<task>/epoch_0002_step_00000150.ckpt  mid-epoch (ckpt_every / final)
    <run_dir>/checkpoints/<task>/latest         JSON pointer to the newest checkpoint

``<task>`` is the single task trained on, or ``multi``. Every file is written
atomically (temporary file + fsync + rename), so a killed run leaves either
the previous or the new checkpoint and pointer, never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from teamvla_schema import SchemaError
from teamvla_schema.atomic import atomic_write_text

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
SUFFIX = ".ckpt"


def task_dir_name(tasks: Sequence[str]) -> str:
    """``<task>`` part of the checkpoint path: the single task, or ``multi``."""
    unique = sorted(set(tasks))
    return unique[0] if len(unique) == 1 else "multi"


def checkpoint_name(*, epoch: int, step: int | None = None) -> str:
    """``epoch_0003.ckpt`` (end of epoch 3) or ``epoch_0003_step_00000150.ckpt`` (inside epoch 3)."""
    if step is None:
        return f"epoch_{epoch:04d}{SUFFIX}"
    return f"epoch_{epoch:04d}_step_{step:08d}{SUFFIX}"


def read_latest(ckpt_dir: Path) -> dict[str, Any] | None:
    """The ``latest`` pointer of a checkpoint directory, or None when there is none."""
    pointer = ckpt_dir / LATEST
    if not pointer.is_file():
        return None
    try:
        data = json.loads(pointer.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SchemaError(f"unreadable checkpoint pointer: {exc}", path=pointer) from None
    if not isinstance(data, dict) or not isinstance(data.get("checkpoint"), str):
        raise SchemaError("checkpoint pointer lacks a 'checkpoint' name", path=pointer)
    return data


def publish_checkpoint(
    ckpt_dir: Path, name: str, *, step: int, epoch: int, keep_last: int
) -> list[str]:
    """Point ``latest`` at ``name`` and delete all but the newest ``keep_last`` checkpoints.

    The list of kept checkpoints lives in the pointer itself, so a resumed run
    keeps pruning the files of the run it continues. Returns the deleted names.
    """
    previous = read_latest(ckpt_dir) or {}
    history = [n for n in previous.get("history", []) if n != name] + [name]
    keep, drop = history[-keep_last:], history[:-keep_last]
    pointer = {"checkpoint": name, "step": step, "epoch": epoch, "history": keep}
    atomic_write_text(ckpt_dir / LATEST, json.dumps(pointer, indent=1) + "\n")
    for old in drop:
        with contextlib.suppress(FileNotFoundError):
            (ckpt_dir / old).unlink()
    return drop


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file from a ``.ckpt`` path, a ``latest`` pointer, a checkpoint directory or a run directory."""
    p = Path(path)
    if p.is_file():
        if p.name == LATEST:
            return p.parent / read_latest(p.parent)["checkpoint"]  # type: ignore[index]
        return p
    if p.is_dir():
        if (p / LATEST).is_file():
            return resolve_checkpoint(p / LATEST)
        pointers = (
            sorted((p / CHECKPOINT_DIR).glob(f"*/{LATEST}"))
            if (p / CHECKPOINT_DIR).is_dir()
            else []
        )
        if pointers:
            # Several task directories: the one whose newest checkpoint is most recent.
            newest = max(
                pointers,
                key=lambda q: (q.parent / read_latest(q.parent)["checkpoint"]).stat().st_mtime_ns,
            )  # type: ignore[index]
            return resolve_checkpoint(newest)
        raise SchemaError(
            f"no '{LATEST}' checkpoint pointer in this directory or its {CHECKPOINT_DIR}/*/", path=p
        )
    raise SchemaError("no such checkpoint file or run directory", path=p)


# --------------------------------------------------------------------------- RNG state


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and every CUDA device) generator states, checkpoint-ready."""
    version, py_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": {
            "version": version,
            "state": np.asarray(py_state, dtype=np.uint64),
            "gauss": gauss,
        },
        "numpy": {
            "name": np_name,
            "keys": np_keys,
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (arrays as loaded by ``load_checkpoint``)."""
    py = state["python"]
    random.setstate(
        (int(py["version"]), tuple(int(x) for x in np.asarray(py["state"])), py["gauss"])
    )
    nps = state["numpy"]
    np.random.set_state(
        (
            nps["name"],
            np.asarray(nps["keys"], dtype=np.uint32),
            nps["pos"],
            nps["has_gauss"],
            nps["gauss"],
        )
    )
    torch.set_rng_state(torch.from_numpy(np.array(state["torch"], dtype=np.uint8)))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [torch.from_numpy(np.array(s, dtype=np.uint8)) for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
