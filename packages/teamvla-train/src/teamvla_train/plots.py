"""Pictures: rollout strips and animated GIFs of an episode, and training curves.

Every file is rendered in memory and published with
:func:`teamvla_schema.atomic.atomic_write_bytes`. matplotlib is used with the
Agg backend only (no display needed) and imported lazily.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from teamvla_schema.atomic import atomic_write_bytes
from teamvla_schema.errors import SchemaError

# --------------------------------------------------------------------------- rollouts


def _upscale(frame: np.ndarray, scale: int) -> np.ndarray:
    # Nearest-neighbour keeps the pixel-art look of the small renders.
    return frame.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else frame


def _caption(img: Image.Image, text: str) -> Image.Image:
    """A copy of ``img`` with a white band holding ``text`` above it."""
    band = 14 * (text.count("\n") + 1) + 4
    out = Image.new("RGB", (img.width, img.height + band), "white")
    out.paste(img, (0, band))
    ImageDraw.Draw(out).multiline_text((3, 2), text, fill=(0, 0, 0), spacing=2)
    return out


def _check_frames(frames: Sequence[np.ndarray], what: str) -> None:
    if not frames:
        raise ValueError(f"{what}: no frames to draw")
    f0 = np.asarray(frames[0])
    if f0.dtype != np.uint8 or f0.ndim != 3 or f0.shape[2] != 3:
        raise ValueError(f"{what}: frames must be uint8 (H, W, 3), received {f0.dtype} {f0.shape}")


def rollout_strip(
    frames: Sequence[np.ndarray],
    path: str | os.PathLike[str],
    *,
    num_frames: int = 8,
    columns: int = 4,
    scale: int = 2,
    title: str | None = None,
) -> Path:
    """Write a PNG grid of ``num_frames`` evenly spaced frames of an episode.

    ``frames`` are uint8 (H, W, 3) images (a rollout stores both cameras side by
    side). Each tile is labelled with its step index; ``title`` goes above the grid.
    """
    _check_frames(frames, "rollout_strip")
    n = min(num_frames, len(frames))
    picks = np.unique(np.linspace(0, len(frames) - 1, n).round().astype(int))
    tiles = []
    for t in picks:
        tile = Image.fromarray(_upscale(np.asarray(frames[t]), scale))
        tiles.append(_caption(tile, f"t={t}"))
    cols = max(1, min(columns, len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    tw, th = tiles[0].size
    pad = 4
    sheet = Image.new("RGB", (cols * (tw + pad) + pad, rows * (th + pad) + pad), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, (pad + (i % cols) * (tw + pad), pad + (i // cols) * (th + pad)))
    if title:
        sheet = _caption(sheet, title)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def rollout_gif(
    frames: Sequence[np.ndarray],
    path: str | os.PathLike[str],
    *,
    scale: int = 2,
    frame_ms: int = 80,
    title: str | None = None,
) -> Path:
    """Write an animated GIF of an episode (loops forever; last frame held 1 s)."""
    _check_frames(frames, "rollout_gif")
    images = []
    for t, frame in enumerate(frames):
        img = Image.fromarray(_upscale(np.asarray(frame), scale))
        images.append(_caption(img, f"{title + '  ' if title else ''}t={t}"))
    durations = [frame_ms] * (len(images) - 1) + [1000]
    buf = io.BytesIO()
    images[0].save(
        buf, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0
    )
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


# --------------------------------------------------------------------------- training curves

# Panels of the training-curve figure: title, y label, which series go there.
_LOSS_PANEL = "loss"
_TIME_KEYS = ("data_time", "compute_time")


def _series(
    records: Sequence[dict[str, Any]], key: str, split: str
) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for rec in records:
        v = rec.get(key)
        if rec.get("split") != split or isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if math.isfinite(v) and isinstance(rec.get("step"), int | float):
            xs.append(float(rec["step"]))
            ys.append(float(v))
    return np.asarray(xs), np.asarray(ys)


def plot_training_curves(
    metrics: str | os.PathLike[str] | Sequence[dict[str, Any]],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Write a PNG of a run's training curves from its JSONL metrics log (or its records).

    Panels: train and validation losses (every ``*loss*`` key, log scale), the
    learning rate, and the time per step split into data wait and compute (ms),
    with the data share in the legend. Records need ``split`` and ``step``
    keys (the trainer's :class:`~teamvla_train.engine.metrics.MetricsLogger` format).
    """
    import matplotlib

    matplotlib.use("Agg")  # headless; must precede pyplot
    import matplotlib.pyplot as plt

    from teamvla_train.engine.metrics import read_metrics

    if isinstance(metrics, str | os.PathLike):
        try:
            records = read_metrics(metrics, split=None)
        except OSError as exc:
            raise SchemaError(f"cannot read metrics log: {exc.strerror}", path=metrics) from None
    else:
        records = list(metrics)
    splits = sorted(
        {str(r.get("split")) for r in records if "split" in r}, key=lambda s: (s != "train", s)
    )
    loss_keys = sorted({k for r in records for k in r if "loss" in k})
    panels: list[tuple[str, list[tuple[str, str]]]] = []
    losses = [
        (split, k) for split in splits for k in loss_keys if len(_series(records, k, split)[0])
    ]
    if losses:
        panels.append(("loss", losses))
    if len(_series(records, "lr", "train")[0]):
        panels.append(("learning rate", [("train", "lr")]))
    if all(len(_series(records, k, "train")[0]) for k in _TIME_KEYS):
        panels.append(("time per step (ms)", [("train", k) for k in _TIME_KEYS]))
    if not panels:
        raise SchemaError(
            "no loss, learning-rate or timing series to plot",
            path=None if not isinstance(metrics, str | os.PathLike) else metrics,
        )
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(7, 2.5 * len(panels) + 0.5), sharex=True, squeeze=False
    )
    for ax, (name, series) in zip(axes[:, 0], panels, strict=True):
        positive = True
        for split, key in series:
            x, y = _series(records, key, split)
            scale = 1000.0 if key in _TIME_KEYS else 1.0
            label = key if name != "loss" else f"{split} {key}"
            if key == "data_time":
                data, comp = y.sum(), _series(records, "compute_time", split)[1].sum()
                label += f" ({100 * data / max(data + comp, 1e-12):.1f}% of step time)"
            ax.plot(
                x,
                y * scale,
                label=label,
                marker="o" if len(x) < 20 else None,
                markersize=3,
                linestyle="--" if split != "train" else "-",
            )
            positive = positive and bool((y > 0).all())
        if name == "loss" and positive:
            ax.set_yscale("log")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    axes[-1, 0].set_xlabel("optimiser step")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def plot_dagger_iterations(
    records: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]
) -> Path:
    """PNG of DAgger's per-iteration closed-loop success per task (the policy alone) and expert share.

    ``records`` are the ``dagger_iteration`` / ``dagger_final`` metric events:
    the success measured before iteration i's data was collected sits at x = i,
    the final measurement at x = the number of iterations.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [r for r in records if r.get("event") in ("dagger_iteration", "dagger_final")]
    tasks = sorted({k[len("success_") :] for r in points for k in r if k.startswith("success_")})
    if not points or not tasks:
        raise SchemaError("no DAgger success measurements to plot")
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
    for task in tasks:
        xs = [int(r["iteration"]) for r in points if f"success_{task}" in r]
        ys = [100.0 * float(r[f"success_{task}"]) for r in points if f"success_{task}" in r]
        ax.plot(xs, ys, marker="o", label=task)
    ax.set_ylabel("success, policy alone (%)")
    ax.set_ylim(-5, 105)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    its = [r for r in points if r.get("event") == "dagger_iteration"]
    ax2.bar(
        [int(r["iteration"]) for r in its], [100.0 * float(r["intervention_rate"]) for r in its]
    )
    ax2.set_ylabel("expert-executed steps (%)")
    ax2.set_xlabel("DAgger iteration (data sets aggregated before the measurement)")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
