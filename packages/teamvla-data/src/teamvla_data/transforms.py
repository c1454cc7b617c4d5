"""Batch transforms: callables ``batch -> batch`` applied in order.

A batch is a dict following :mod:`teamvla_data.batch` (leading batch axis).
Transforms run on numpy batches in the loader (before the hand-off from
workers, so images stay uint8) and, for :class:`ImagesToFloat`,
:class:`Normalize` and :class:`Resize`, also on torch tensors on the training
device. torch is never imported by this module unless a tensor is passed in.

Random transforms (:class:`RandomShift`, :class:`ColorJitter`) derive every
sample's random numbers from ``(seed, epoch, episode_index, frame_index)`` with
a counter-based hash, so a sample is augmented identically whatever the batch
it lands in, the worker that loads it or the number of workers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from teamvla_schema.errors import SchemaError

from teamvla_data import batch as B
from teamvla_data._torch import is_tensor
from teamvla_data.stats import NormalizationStats, NormalizeMode

if TYPE_CHECKING:
    from teamvla_data.config import DatasetConfig

Batch = dict[str, Any]
Transform = Callable[[Batch], Batch]


class RandomTransform:
    """Base of seeded random transforms; called as ``t(batch, epoch=e)``."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def __call__(self, batch: Batch, *, epoch: int = 0) -> Batch:  # pragma: no cover - abstract
        raise NotImplementedError


class Compose:
    """Apply transforms in order; random ones get the epoch."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, batch: Batch, *, epoch: int = 0) -> Batch:
        for t in self.transforms:
            batch = t(batch, epoch=epoch) if isinstance(t, RandomTransform) else t(batch)
        return batch

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


# --------------------------------------------------------------------------- per-sample randomness

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def sample_uniform(
    seed: int, epoch: int, batch: Mapping[str, Any], stream: int, count: int
) -> np.ndarray:
    """Uniform [0, 1) numbers, shape (B, count), fixed by (seed, epoch, sample, stream)."""
    ep = np.asarray(_to_numpy(batch[B.EPISODE_INDEX]), np.int64).astype(np.uint64)
    fr = np.asarray(_to_numpy(batch[B.FRAME_INDEX]), np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = _splitmix(np.full(ep.shape, np.uint64(seed & 0xFFFFFFFFFFFFFFFF)))
        for part in (np.uint64(epoch & 0xFFFFFFFFFFFFFFFF), ep, fr, np.uint64(stream)):
            h = _splitmix(h ^ part)
        k = np.arange(count, dtype=np.uint64)
        bits = _splitmix(h[:, None] ^ (k[None, :] * _M2))
    return (bits >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _to_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if is_tensor(x) else np.asarray(x)


def _require_numpy_uint8(batch: Batch, key: str, who: str) -> np.ndarray:
    img = batch[key]
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 5:
        got = f"{type(img).__name__} {getattr(img, 'dtype', '')}{tuple(getattr(img, 'shape', ()))}"
        raise SchemaError(
            f"{who} expects uint8 numpy images (B, To, H, W, 3), received {got}", field=key
        )
    return img


# --------------------------------------------------------------------------- transforms


class ImagesToFloat:
    """uint8 images to float32 in [0, 1] (numpy or torch; meant for the end of the pipeline, on the device).

    ``channels_first=True`` also moves channels: (..., H, W, 3) -> (..., 3, H, W).
    """

    def __init__(self, keys: Sequence[str] = B.IMAGE_KEYS, *, channels_first: bool = False) -> None:
        self.keys = tuple(keys)
        self.channels_first = channels_first

    def __call__(self, batch: Batch) -> Batch:
        out = dict(batch)
        for key in self.keys:
            img = batch[key]
            if is_tensor(img):
                img = img.float().div_(255.0)
                if self.channels_first:
                    img = img.movedim(-1, -3)
            else:
                img = np.asarray(img, np.float32) * np.float32(1.0 / 255.0)
                if self.channels_first:
                    img = np.moveaxis(img, -1, -3)
            out[key] = img
        return out

    def __repr__(self) -> str:
        return f"ImagesToFloat(keys={self.keys}, channels_first={self.channels_first})"


class Normalize:
    """Normalise fields with :class:`NormalizationStats` (``mean_std`` by default, or ``min_max``).

    Every field in ``fields`` must be in the batch and in the statistics: a gap
    is an error, never a silent pass-through. ``expected_key``, when given, must
    equal ``stats.key`` (statistics computed over another selection are refused).
    """

    def __init__(
        self,
        stats: NormalizationStats,
        fields: Sequence[str] | None = None,
        *,
        mode: NormalizeMode | None = None,
        expected_key: str | None = None,
    ) -> None:
        if expected_key is not None and stats.key != expected_key:
            raise SchemaError(
                f"normalisation statistics were computed over a different selection of episodes or fields "
                f"(stats key {stats.key[:12]}..., dataset key {expected_key[:12]}...); recompute them"
            )
        self.stats = stats
        self.fields = tuple(fields if fields is not None else stats.fields)
        missing = [f for f in self.fields if f not in stats.fields]
        if missing:
            raise SchemaError(
                f"no statistics for field(s) {missing}; the statistics cover {sorted(stats.fields)}"
            )
        self.mode = mode or stats.mode

    def __call__(self, batch: Batch) -> Batch:
        out = dict(batch)
        for name in self.fields:
            if name not in batch:
                raise SchemaError(
                    f"Normalize: the batch has no field {name!r} (keys: {sorted(batch)})",
                    field=name,
                )
            out[name] = self.stats.normalize(name, batch[name], self.mode)
        return out

    def __repr__(self) -> str:
        return f"Normalize(fields={self.fields}, mode={self.mode!r})"


def _bilinear_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) interpolation weights, half-pixel centres (align_corners=False)."""
    pos = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = pos - i0
    m = np.zeros((n_out, n_in), np.float32)
    np.add.at(m, (np.arange(n_out), i0), 1 - w1)
    np.add.at(m, (np.arange(n_out), i1), w1)
    return m


class Resize:
    """Bilinear resize of images to ``size = (H, W)``. numpy uint8 stays uint8; torch tensors use interpolate."""

    def __init__(self, size: Sequence[int], keys: Sequence[str] = B.IMAGE_KEYS) -> None:
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be (H, W) of positive ints, received {size}")
        self.size = (int(size[0]), int(size[1]))
        self.keys = tuple(keys)

    def __call__(self, batch: Batch) -> Batch:
        out = dict(batch)
        for key in self.keys:
            img = batch[key]
            h, w = img.shape[-3], img.shape[-2]
            if (h, w) == self.size:
                continue
            out[key] = self._torch(img) if is_tensor(img) else self._numpy(img, h, w)
        return out

    def _numpy(self, img: np.ndarray, h: int, w: int) -> np.ndarray:
        ry = _bilinear_matrix(self.size[0], h)
        rx = _bilinear_matrix(self.size[1], w)
        x = np.asarray(img, np.float32)
        # (..., H, W, C): rows then columns, as two matrix products.
        y = np.einsum("oh,...hwc->...owc", ry, x, optimize=True)
        y = np.einsum("pw,...owc->...opc", rx, y, optimize=True)
        if img.dtype == np.uint8:
            return np.clip(np.rint(y), 0, 255).astype(np.uint8)
        return y.astype(img.dtype, copy=False)

    def _torch(self, img: Any) -> Any:
        import torch.nn.functional as F

        lead = img.shape[:-3]
        x = img.reshape(-1, *img.shape[-3:]).movedim(-1, 1)
        x = F.interpolate(x.float(), size=self.size, mode="bilinear", align_corners=False)
        x = x.movedim(1, -1).reshape(*lead, *self.size, img.shape[-1])
        return (
            x.round().clamp(0, 255).to(img.dtype)
            if not img.is_floating_point()
            else x.to(img.dtype)
        )

    def __repr__(self) -> str:
        return f"Resize(size={self.size})"


class RandomShift(RandomTransform):
    """Shift each sample's images by up to ``max_shift`` pixels (edge pixels repeat), per camera.

    Equivalent to edge-padding by ``max_shift`` and taking a random crop of the
    original size. All frames of one sample (its history) get the same shift.
    numpy uint8 batches only (runs in the loader).
    """

    def __init__(self, max_shift: int, seed: int = 0, keys: Sequence[str] = B.IMAGE_KEYS) -> None:
        super().__init__(seed)
        if max_shift < 0:
            raise ValueError("max_shift must be >= 0")
        self.max_shift = int(max_shift)
        self.keys = tuple(keys)

    def __call__(self, batch: Batch, *, epoch: int = 0) -> Batch:
        if self.max_shift == 0:
            return batch
        out = dict(batch)
        span = 2 * self.max_shift + 1
        for k, key in enumerate(self.keys):
            img = _require_numpy_uint8(batch, key, "RandomShift")
            n, _, h, w, _ = img.shape
            u = sample_uniform(self.seed, epoch, batch, stream=100 + k, count=2)
            dy = np.minimum((u[:, 0] * span).astype(np.int64), span - 1) - self.max_shift
            dx = np.minimum((u[:, 1] * span).astype(np.int64), span - 1) - self.max_shift
            rows = np.clip(np.arange(h)[None, :] + dy[:, None], 0, h - 1)  # (B, H)
            cols = np.clip(np.arange(w)[None, :] + dx[:, None], 0, w - 1)  # (B, W)
            b = np.arange(n)[:, None, None, None]
            t = np.arange(img.shape[1])[None, :, None, None]
            out[key] = img[b, t, rows[:, None, :, None], cols[:, None, None, :]]
        return out

    def __repr__(self) -> str:
        return f"RandomShift(max_shift={self.max_shift}, seed={self.seed})"


class ColorJitter(RandomTransform):
    """Random brightness, contrast and saturation, factors uniform in [1 - s, 1 + s] per sample and camera.

    numpy uint8 batches in, uint8 out (so the worker hand-off stays uint8).
    """

    _LUMA = np.array([0.299, 0.587, 0.114], np.float32)

    def __init__(self, strength: float, seed: int = 0, keys: Sequence[str] = B.IMAGE_KEYS) -> None:
        super().__init__(seed)
        if not 0 <= strength <= 1:
            raise ValueError("strength must be in [0, 1]")
        self.strength = float(strength)
        self.keys = tuple(keys)

    def __call__(self, batch: Batch, *, epoch: int = 0) -> Batch:
        if self.strength == 0:
            return batch
        out = dict(batch)
        s = self.strength
        for k, key in enumerate(self.keys):
            img = _require_numpy_uint8(batch, key, "ColorJitter")
            u = sample_uniform(self.seed, epoch, batch, stream=200 + k, count=3)
            f = (1 - s + 2 * s * u).astype(np.float32)[:, None, None, None, :]  # (B,1,1,1,3)
            x = img.astype(np.float32)
            x *= f[..., 0:1]  # brightness
            mean = x.mean(axis=(-3, -2, -1), keepdims=True)
            x = (x - mean) * f[..., 1:2] + mean  # contrast
            gray = x @ self._LUMA
            x = (x - gray[..., None]) * f[..., 2:3] + gray[..., None]  # saturation
            out[key] = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        return out

    def __repr__(self) -> str:
        return f"ColorJitter(strength={self.strength}, seed={self.seed})"


def config_transforms(
    cfg: DatasetConfig, *, train: bool, normalize: Normalize | None = None
) -> list[Transform]:
    """The standard pipeline of a ``dataset:`` config: resize, augmentation (``train`` only), normalisation."""
    pipeline: list[Transform] = []
    if cfg.image_size is not None:
        pipeline.append(Resize(cfg.image_size))
    if train and cfg.augment.enabled:
        if cfg.augment.shift_pixels:
            pipeline.append(RandomShift(cfg.augment.shift_pixels, seed=cfg.seed))
        if cfg.augment.color_jitter:
            pipeline.append(ColorJitter(cfg.augment.color_jitter, seed=cfg.seed + 1))
    if normalize is not None:
        pipeline.append(normalize)
    return pipeline
