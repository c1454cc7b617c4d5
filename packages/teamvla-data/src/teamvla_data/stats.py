"""Normalisation statistics: computed once over the train split, stored as JSON, applied both ways.

Per field (default ``q_a``, ``q_b``, ``action_a``, ``action_b``) and per
dimension: ``mean``, ``std`` (population), ``min``, ``max``, ``p01``, ``p99``
(1st / 99th percentiles) and the value ``count``.

One streaming pass over the columns, a chunk at a time: moments are merged
exactly in float64 (Chan et al.), min/max are exact, and percentiles come from
a per-dimension histogram of :data:`HIST_BINS` bins whose range grows by
doubling when values fall outside it (counts of neighbouring bins merge). A
percentile is read off the cumulative histogram with linear interpolation inside
the bin, so it is within one final bin width of numpy's ``inverted_cdf``
percentile (the bin width is at most about 4 x (max - min) / HIST_BINS). Memory
is O(fields x dims x HIST_BINS) whatever the dataset size.

This module is the one home of statistics: it computes them (:func:`compute_stats`
over any chunks, :func:`compute_from_columns` over a dataset's column store),
keys them by the data's identity, and caches and loads them
(:func:`load_or_compute`). The ``key`` is a hash of the sorted episode list
(task, id, file size, mtime, steps), the fields and :data:`STATS_VERSION`:
portable, so a copied dataset (and a checkpoint's statistics) keeps it. A
dataset only accepts statistics whose key matches its own train selection.
Saved statistics live in ``CACHE_DIR/stats-<key>-<local>.json``, ``<local>``
hashing the files' ctime and inode, so statistics saved before an episode was
rewritten in place with its size and mtime kept are not reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from teamvla_schema.atomic import atomic_write_text
from teamvla_schema.errors import SchemaError

from teamvla_data._torch import is_tensor
from teamvla_data.manifest import EpisodeRecord

log = logging.getLogger(__name__)

STATS_FORMAT = "teamvla-stats"
STATS_VERSION = 1
HIST_BINS = 4096
#: Denominators (std, max - min) are floored here so constant dimensions do not blow up.
EPS = 1e-6
STAT_NAMES = ("mean", "std", "min", "max", "p01", "p99")
#: Rows read per chunk when computing statistics from columns.
STATS_CHUNK_ROWS = 1 << 16

NormalizeMode = Literal["mean_std", "min_max"]


def stats_key(records: Iterable[EpisodeRecord], fields: Sequence[str]) -> str:
    """What a set of statistics was computed over: sorted episodes (with file identity), fields, version."""
    h = hashlib.sha256(f"{STATS_FORMAT}:{STATS_VERSION}:{','.join(sorted(fields))}\n".encode())
    for task, episode_id, size, mtime_ns, steps in sorted(
        (r.task, r.episode_id, r.size, r.mtime_ns, r.num_steps) for r in records
    ):
        h.update(f"{task}\x1f{episode_id}\x1f{size}\x1f{mtime_ns}\x1f{steps}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class FieldStats:
    """Statistics of one field; each array has the field's per-step shape (e.g. (N,) or ())."""

    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    p01: np.ndarray
    p99: np.ndarray
    count: int

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            name: np.asarray(getattr(self, name), np.float64).tolist() for name in STAT_NAMES
        }
        out["count"] = int(self.count)
        return out

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, name: str = "?") -> FieldStats:
        try:
            arrays = {k: np.asarray(doc[k], dtype=np.float32) for k in STAT_NAMES}
            count = int(doc["count"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"malformed statistics: {exc}", field=name) from None
        shapes = {a.shape for a in arrays.values()}
        if len(shapes) != 1:
            raise SchemaError(f"statistics arrays disagree in shape: {sorted(shapes)}", field=name)
        return cls(count=count, **arrays)


@dataclass
class NormalizationStats:
    """Statistics of several fields, JSON-serialisable (the trainer keeps them in checkpoints).

    :meth:`normalize` / :meth:`unnormalize` take numpy arrays or torch tensors
    (torch is never imported here; tensors keep their device and dtype).
    """

    key: str
    fields: dict[str, FieldStats]
    mode: NormalizeMode = "mean_std"
    num_episodes: int = 0
    version: int = STATS_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    # -- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (plain lists and numbers)."""
        return {
            "format": STATS_FORMAT,
            "version": self.version,
            "key": self.key,
            "mode": self.mode,
            "num_episodes": self.num_episodes,
            "fields": {name: fs.to_dict() for name, fs in self.fields.items()},
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> NormalizationStats:
        """Inverse of :meth:`to_dict`; raises :class:`SchemaError` for a malformed or newer document."""
        if not isinstance(doc, Mapping) or doc.get("format") != STATS_FORMAT:
            raise SchemaError(f"not normalisation statistics (expected format {STATS_FORMAT!r})")
        version = doc.get("version")
        if version != STATS_VERSION:
            raise SchemaError(
                f"statistics version {version!r} is not supported (expected {STATS_VERSION})"
            )
        mode = doc.get("mode", "mean_std")
        if mode not in ("mean_std", "min_max"):
            raise SchemaError(
                f"expected mode 'mean_std' or 'min_max', received {mode!r}", field="mode"
            )
        fields_doc = doc.get("fields")
        key = doc.get("key")
        if not isinstance(fields_doc, Mapping) or not isinstance(key, str):
            raise SchemaError("statistics need a 'key' string and a 'fields' mapping")
        fields = {str(n): FieldStats.from_dict(d, name=str(n)) for n, d in fields_doc.items()}
        return cls(
            key,
            fields,
            mode,
            int(doc.get("num_episodes", 0)),
            STATS_VERSION,
            dict(doc.get("extra", {})),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write as JSON, atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NormalizationStats:
        """Read statistics written by :meth:`save`."""
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls.from_dict(doc)
        except (OSError, ValueError) as exc:
            if isinstance(exc, SchemaError):
                raise exc.with_path(path) from None
            raise SchemaError(f"cannot read statistics: {exc}", path=path) from None

    def with_mode(self, mode: NormalizeMode) -> NormalizationStats:
        """The same statistics applied with another ``mode``."""
        return NormalizationStats(
            self.key, self.fields, mode, self.num_episodes, self.version, self.extra
        )

    # -- applying
    def _get(self, name: str) -> FieldStats:
        try:
            return self.fields[name]
        except KeyError:
            raise SchemaError(
                f"no statistics for this field; the statistics cover {sorted(self.fields)}",
                field=name,
            ) from None

    def _scale_shift(self, name: str, mode: NormalizeMode | None) -> tuple[np.ndarray, np.ndarray]:
        # normalised = (x - shift) / scale
        fs = self._get(name)
        mode = mode or self.mode
        if mode == "mean_std":
            return np.maximum(fs.std, EPS).astype(np.float32), fs.mean.astype(np.float32)
        if mode == "min_max":
            half = np.maximum(fs.max - fs.min, EPS).astype(np.float32) / 2
            return half, (fs.min + half).astype(np.float32)
        raise ValueError(f"unknown normalisation mode {mode!r}")

    def normalize(self, name: str, x: Any, mode: NormalizeMode | None = None) -> Any:
        """Map raw values of field ``name`` to normalised ones (numpy array or torch tensor)."""
        scale, shift = self._scale_shift(name, mode)
        scale, shift = _like(scale, x), _like(shift, x)
        return (x - shift) / scale

    def unnormalize(self, name: str, x: Any, mode: NormalizeMode | None = None) -> Any:
        """Map normalised values of field ``name`` back to raw units (used at inference)."""
        scale, shift = self._scale_shift(name, mode)
        scale, shift = _like(scale, x), _like(shift, x)
        return x * scale + shift


def _like(arr: np.ndarray, x: Any) -> Any:
    if is_tensor(x):
        import torch  # already imported by whoever made the tensor

        return torch.as_tensor(
            arr, dtype=x.dtype if x.is_floating_point() else torch.float32, device=x.device
        )
    x_dtype = getattr(x, "dtype", None)
    if x_dtype is not None and np.dtype(x_dtype).kind == "f":
        return arr.astype(x_dtype, copy=False)
    return arr


# --------------------------------------------------------------------------- computing


class RunningStats:
    """Streaming moments, extremes and a growing histogram of one field's values (per dimension)."""

    def __init__(self, shape: tuple[int, ...], bins: int = HIST_BINS) -> None:
        if bins % 2:
            raise ValueError("bins must be even")
        self.shape = shape
        dims = math.prod(shape)
        self.bins = bins
        self.count = 0
        self.mean = np.zeros(dims)
        self.m2 = np.zeros(dims)
        self.min = np.full(dims, np.inf)
        self.max = np.full(dims, -np.inf)
        self.hist = np.zeros((dims, bins), np.int64)
        self.lo = np.zeros(dims)
        self.width = np.zeros(dims)  # 0 until the first chunk fixes the range

    def update(self, chunk: np.ndarray) -> None:
        """Add values of shape (n, *shape)."""
        x = np.asarray(chunk, np.float64).reshape(len(chunk), -1)
        n = len(x)
        if n == 0:
            return
        # Chan et al.: merge (count, mean, M2) of two sets exactly.
        c_mean = x.mean(axis=0)
        c_m2 = ((x - c_mean) ** 2).sum(axis=0)
        total = self.count + n
        delta = c_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + c_m2 + delta**2 * (self.count * n / total)
        self.count = total
        c_min, c_max = x.min(axis=0), x.max(axis=0)
        self.min = np.minimum(self.min, c_min)
        self.max = np.maximum(self.max, c_max)
        for d in range(x.shape[1]):
            self._histogram(d, x[:, d], c_min[d], c_max[d])

    def _histogram(self, d: int, values: np.ndarray, vmin: float, vmax: float) -> None:
        if self.width[d] == 0:
            span = vmax - vmin
            self.lo[d] = vmin
            self.width[d] = (
                (span if span > 0 else max(abs(vmin), 1.0) * 1e-6) * (1 + 1e-9) / self.bins
            )
        half = self.bins // 2
        while vmax >= self.lo[d] + self.bins * self.width[d] or vmin < self.lo[d]:
            merged = self.hist[d].reshape(half, 2).sum(axis=1)
            self.hist[d] = 0
            if vmin < self.lo[d]:  # grow downwards: old range becomes the upper half
                self.hist[d, half:] = merged
                self.lo[d] -= self.bins * self.width[d]
            else:  # grow upwards
                self.hist[d, :half] = merged
            self.width[d] *= 2
        idx = ((values - self.lo[d]) / self.width[d]).astype(np.int64)
        np.clip(idx, 0, self.bins - 1, out=idx)
        self.hist[d] += np.bincount(idx, minlength=self.bins)

    def percentile(self, q: float) -> np.ndarray:
        """Approximate ``q``-th percentile (0..100) per dimension."""
        out = np.empty(len(self.hist))
        target = q / 100.0 * self.count
        for d in range(len(self.hist)):
            cum = np.cumsum(self.hist[d])
            b = int(np.searchsorted(cum, max(target, 1e-12), side="left"))
            b = min(b, self.bins - 1)
            before = cum[b - 1] if b > 0 else 0
            inside = self.hist[d, b]
            frac = (target - before) / inside if inside else 0.0
            out[d] = self.lo[d] + (b + min(max(frac, 0.0), 1.0)) * self.width[d]
        return np.clip(out, self.min, self.max)

    def result(self) -> FieldStats:
        if self.count == 0:
            raise SchemaError("no values to compute statistics from")

        def shaped(a: np.ndarray) -> np.ndarray:
            return a.astype(np.float32).reshape(self.shape)

        std = np.sqrt(self.m2 / self.count)
        return FieldStats(
            shaped(self.mean),
            shaped(std),
            shaped(self.min),
            shaped(self.max),
            shaped(self.percentile(1.0)),
            shaped(self.percentile(99.0)),
            self.count,
        )


def compute_stats(
    chunks: Iterable[Mapping[str, np.ndarray]],
    fields: Sequence[str],
    *,
    key: str,
    num_episodes: int = 0,
    mode: NormalizeMode = "mean_std",
    bins: int = HIST_BINS,
) -> NormalizationStats:
    """Statistics of ``fields`` over ``chunks`` (mappings field -> array (n, *shape)), in one pass."""
    running: dict[str, RunningStats] = {}
    for chunk in chunks:
        for name in fields:
            arr = chunk[name]
            if name not in running:
                running[name] = RunningStats(tuple(arr.shape[1:]), bins)
            running[name].update(arr)
    missing = [n for n in fields if n not in running]
    if missing:
        raise SchemaError(f"no data for statistics of {missing}")
    return NormalizationStats(key, {n: running[n].result() for n in fields}, mode, num_episodes)


# --------------------------------------------------------------------------- a dataset's statistics


class ColumnSource(Protocol):
    """Where a dataset's rows live: :class:`teamvla_data.columns.ColumnStore` is one."""

    starts: dict[tuple[str, str], int]

    def column(self, name: str) -> np.ndarray: ...


def row_spans(
    records: Sequence[EpisodeRecord], starts: Mapping[tuple[str, str], int]
) -> list[tuple[int, int]]:
    """The column rows of ``records`` as ascending ``(start, stop)`` spans, neighbours merged."""
    spans: list[tuple[int, int]] = []
    for start, steps in sorted((starts[(r.task, r.episode_id)], r.num_steps) for r in records):
        if spans and spans[-1][1] == start and spans[-1][1] - spans[-1][0] < STATS_CHUNK_ROWS:
            spans[-1] = (spans[-1][0], start + steps)
        else:
            spans.append((start, start + steps))
    return spans


def _column_chunks(
    source: ColumnSource, records: Sequence[EpisodeRecord], fields: Sequence[str]
) -> Iterator[dict[str, np.ndarray]]:
    # Contiguous rows of consecutive episodes are read together.
    for a, b in row_spans(records, source.starts):
        yield {name: np.asarray(source.column(name)[a:b]) for name in fields}


def compute_from_columns(
    records: Sequence[EpisodeRecord],
    fields: Sequence[str],
    source: ColumnSource,
    *,
    mode: NormalizeMode = "mean_std",
) -> NormalizationStats:
    """Statistics of ``fields`` over the rows of ``records`` in ``source``, in one streaming pass."""
    fields = list(fields)
    return compute_stats(
        _column_chunks(source, records, fields),
        fields,
        key=stats_key(records, fields),
        num_episodes=len(records),
        mode=mode,
    )


def stats_path(
    cache_dir: str | os.PathLike[str], records: Iterable[EpisodeRecord], fields: Sequence[str]
) -> Path:
    """Where statistics of ``fields`` over ``records`` are saved under ``cache_dir``.

    The name holds the statistics key (portable: episodes, sizes, mtimes) and a
    hash of the files' local identities (ctime, inode), so that an episode
    rewritten without a new size or mtime gets new statistics.
    """
    records = list(records)
    local = hashlib.sha256()
    for r in sorted(records, key=lambda r: (r.task, r.episode_id)):
        local.update(f"{r.task}\x1f{r.episode_id}\x1f{r.ctime_ns}\x1f{r.ino}\n".encode())
    key = stats_key(records, fields)
    return Path(cache_dir) / f"stats-{key[:24]}-{local.hexdigest()[:12]}.json"


def load_or_compute(
    records: Sequence[EpisodeRecord],
    fields: Sequence[str],
    source: ColumnSource,
    cache_dir: str | os.PathLike[str],
    *,
    mode: NormalizeMode = "mean_std",
) -> NormalizationStats:
    """Saved statistics of ``fields`` over ``records`` whose key matches, or computed and saved ones.

    Saving is atomic; a cache directory that cannot be written only costs a warning.
    """
    fields = list(fields)
    path = stats_path(cache_dir, records, fields)
    key = stats_key(records, fields)
    if path.is_file():  # not a FIFO or a directory someone put there
        try:
            saved = NormalizationStats.load(path)
        except SchemaError as exc:
            log.warning("ignoring unreadable statistics: %s", exc)
        else:
            if saved.key == key:
                return saved.with_mode(mode)
    stats = compute_from_columns(records, fields, source, mode=mode)
    try:
        stats.save(path)
    except OSError as exc:
        log.warning("cannot save statistics to %s (%s)", path, exc.strerror)
    return stats
