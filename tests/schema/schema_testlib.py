"""Shared helpers for the teamvla-schema tests: synthetic steps, episodes and file surgery.

Imported by the test modules of this folder (pytest puts the folder on ``sys.path``);
the name is unique so that it cannot clash with helpers of other test folders.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from teamvla_schema import EpisodeWriter

REPO_ROOT = Path(__file__).resolve().parents[2]


def smooth_image(h: int, w: int, t: float, seed: int = 0) -> np.ndarray:
    """A deterministic smooth uint8 RGB image (gradients plus a moving blob), not noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    cx = (0.3 + 0.4 * np.sin(0.2 * t + seed)) * w
    cy = (0.5 + 0.3 * np.cos(0.15 * t + 2 * seed)) * h
    blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * (0.15 * max(h, w)) ** 2))
    r = 60 + 150 * blob
    g = 40 + 120 * (x / max(w - 1, 1))
    b = 80 + 100 * (y / max(h - 1, 1)) * (1 - blob)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def make_step(
    i: int = 0,
    *,
    h: int = 8,
    w: int = 8,
    n: int = 7,
    task: str = "lift",
    instruction: str = "lift the red block",
    **overrides: Any,
) -> dict[str, Any]:
    """A valid step with every required field; ``overrides`` replace or add fields."""
    t = float(i)
    q = (np.sin(0.1 * t + np.arange(n, dtype=np.float32))).astype(np.float32)
    step: dict[str, Any] = {
        "rgb_a": smooth_image(h, w, t, seed=0),
        "rgb_b": smooth_image(h, w, t, seed=1),
        "q_a": q,
        "q_b": -q,
        "action_a": q + np.float32(0.25),
        "action_b": -q + np.float32(0.25),
        "grip_a": np.float32(min(1.0, 0.125 * i)),
        "grip_b": np.float32(0.0),
        "instruction": instruction,
        "task": task,
        "success": False,
    }
    step.update(overrides)
    return step


def make_steps(num: int, **kw: Any) -> list[dict[str, Any]]:
    return [make_step(i, **kw) for i in range(num)]


def write_episode(
    root: Path,
    steps: Iterable[Mapping[str, Any]],
    meta: Mapping[str, Any] | None = None,
    **writer_kw: Any,
) -> Path:
    """Record ``steps`` as one episode with a fresh :class:`EpisodeWriter`; return its path."""
    with EpisodeWriter(root, **writer_kw) as writer:
        writer.start_episode(dict(meta or {"task": "lift"}))
        for step in steps:
            writer.add_step(step)
        return writer.end_episode()


# --------------------------------------------------------------------------- npz surgery


def npz_members(path: Path) -> dict[str, bytes]:
    """The raw bytes of every member of a zip file, in order."""
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def write_zip(path: Path, members: Mapping[str, bytes], *, compress: bool = True) -> Path:
    """Write a zip file with the given raw members."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def npy_bytes(arr: np.ndarray, *, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def meta_doc(path: Path) -> dict[str, Any]:
    """The ``__meta__`` JSON document of an episode file."""
    raw = np.load(io.BytesIO(npz_members(path)["__meta__.npy"]), allow_pickle=False)
    return json.loads(raw.tobytes().decode("utf-8"))


def meta_npy(doc: Mapping[str, Any] | str | bytes) -> bytes:
    """``__meta__.npy`` bytes for a JSON document (or raw text/bytes, possibly broken)."""
    if isinstance(doc, Mapping):
        doc = json.dumps(doc)
    if isinstance(doc, str):
        doc = doc.encode("utf-8")
    return npy_bytes(np.frombuffer(doc, dtype=np.uint8))


def rewrite_episode(src: Path, dst: Path, **replace: bytes | None) -> Path:
    """Copy an episode file replacing (or, with ``None``, dropping) members by field name."""
    members = npz_members(src)
    for name, data in replace.items():
        key = f"{name}.npy"
        if data is None:
            members.pop(key, None)
        else:
            members[key] = data
    return write_zip(dst, members)
