"""Contact sheets: a grid of both cameras' frames over an episode."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from teamvla_schema.episode import read_episode
from teamvla_schema.errors import SchemaError

from teamvla_data.sim.png import tile, upscale, write_png

SUCCESS_BAR = (40, 170, 60)  # under frames whose step is a success
PLAIN_BAR = (200, 200, 200)


def frame_indices(num_steps: int, frames: int) -> list[int]:
    """``frames`` step indices spread evenly over an episode, first and last included."""
    if num_steps < 1 or frames < 1:
        raise ValueError(f"need num_steps >= 1 and frames >= 1, received {num_steps}, {frames}")
    return sorted({round(x) for x in np.linspace(0, num_steps - 1, min(frames, num_steps))})


def contact_sheet(
    rgb_a: np.ndarray,
    rgb_b: np.ndarray,
    success: np.ndarray | None = None,
    *,
    frames: int = 8,
    scale: int = 2,
) -> np.ndarray:
    """Camera A frames on the top row, camera B below, a bar under each column (green = success).

    ``rgb_a``, ``rgb_b``: ``uint8[T, H, W, 3]``; ``success``: ``bool[T]`` or None.
    """
    if rgb_a.shape != rgb_b.shape or rgb_a.ndim != 4 or rgb_a.shape[-1] != 3:
        raise ValueError(
            f"expected two uint8[T,H,W,3] arrays of one shape, received {rgb_a.shape} and {rgb_b.shape}"
        )
    idx = frame_indices(len(rgb_a), frames)
    h, w = rgb_a.shape[1:3]
    bar_h = max(2, h // 16)
    bars = []
    for i in idx:
        bar = np.empty((h, w, 3), np.uint8)
        bar[:] = 255
        bar[:bar_h] = SUCCESS_BAR if success is not None and bool(success[i]) else PLAIN_BAR
        bars.append(bar)
    sheet = tile([[rgb_a[i] for i in idx], [rgb_b[i] for i in idx], bars])
    sheet = sheet[: sheet.shape[0] - (h - bar_h)]  # keep only the bar of the last row
    return upscale(sheet, scale)


def render_episode(
    path: str | os.PathLike[str], out: str | os.PathLike[str], *, frames: int = 8, scale: int = 2
) -> Path:
    """Write the contact sheet of the episode file ``path`` to the PNG ``out``."""
    ep = read_episode(path, fields=["rgb_a", "rgb_b", "success"])
    try:
        img = contact_sheet(
            ep.arrays["rgb_a"], ep.arrays["rgb_b"], ep.arrays["success"], frames=frames, scale=scale
        )
    except ValueError as exc:
        raise SchemaError(str(exc), path=path) from None
    return write_png(out, img)
