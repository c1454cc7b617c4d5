"""LeRobot v3 on-disk conventions, written down from its documented layout, and the
Arrow <-> numpy conversions both directions need.

A v3 dataset directory::

    meta/info.json                       codebase_version "v3.0", fps, features, path templates
    meta/tasks.parquet                   task_index, task text (the pandas index column)
    meta/stats.json                      per-feature min / max / mean / std / count
    meta/episodes/chunk-XXX/file-YYY.parquet   one row per episode: length, tasks, where its rows
                                         and videos are (data/..., videos/<key>/..., dataset_from_index)
    data/chunk-XXX/file-YYY.parquet      one row per frame, many episodes per file
    videos/<key>/chunk-XXX/file-YYY.mp4  camera streams (features of dtype "video")

Features of dtype ``image`` are PNG bytes inside the data files
(``struct<bytes: binary, path: string>``); numeric features of shape ``(1,)``
are scalar columns, longer ones fixed-size lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from teamvla_schema.errors import SchemaError

from teamvla_data.interop.core import json_ready

CODEBASE_VERSION = "v3.0"
#: How an export may store camera images (``auto``: video when PyAV has an H.264 encoder).
CAMERA_STORAGE = ("auto", "video", "video-lossless", "png")
CHUNKS_SIZE = 1000
DATA_FILE_MB = 100
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
#: Column of meta/episodes we add: the TeamVLA metadata of the episode, as JSON.
EPISODE_JSON = "teamvla/episode"

_NUMERIC = {
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
}  # fmt: skip


def _arrow_type(pa: Any, dtype: str) -> Any:
    if dtype == "string":
        return pa.string()
    if dtype not in _NUMERIC:
        raise SchemaError(f"unsupported LeRobot feature dtype {dtype!r}")
    return pa.from_numpy_dtype(np.dtype(dtype))


def arrow_column(pa: Any, feature: dict[str, Any], values: Any) -> Any:
    """An Arrow array for one feature's values of one episode."""
    dtype, shape = feature["dtype"], list(feature["shape"])
    if dtype == "image":
        return pa.array(values, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    arr = np.asarray(values)
    if dtype == "string":
        return pa.array([str(v) for v in arr], pa.string())
    if shape == [1]:
        return pa.array(arr.reshape(len(arr)), _arrow_type(pa, dtype))
    out = pa.array(np.ascontiguousarray(arr).reshape(-1), _arrow_type(pa, dtype))
    for size in reversed(shape):
        out = pa.FixedSizeListArray.from_arrays(out, size)
    return out


def hf_feature(feature: dict[str, Any]) -> dict[str, Any]:
    """The Hugging Face ``datasets`` feature description LeRobot stores in the parquet schema."""
    dtype, shape = feature["dtype"], list(feature["shape"])
    if dtype == "image":
        return {"_type": "Image"}
    if shape == [1]:
        return {"dtype": dtype, "_type": "Value"}
    if len(shape) == 1:
        return {"feature": {"dtype": dtype, "_type": "Value"}, "length": shape[0], "_type": "List"}
    return {"shape": shape, "dtype": dtype, "_type": f"Array{len(shape)}D"}


def pandas_index_metadata(pyarrow_version: str) -> dict[str, str]:
    """Schema metadata that makes pandas read ``__index_level_0__`` as the index (LeRobot's tasks table)."""
    import json

    doc = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode",
                            "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
             "numpy_type": "int64", "metadata": None},
            {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
             "numpy_type": "object", "metadata": None},
        ],
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pyarrow_version},
        "pandas_version": "2.0.0",
    }  # fmt: skip
    return {"pandas": json.dumps(doc)}


def write_tasks(pa: Any, pq: Any, tasks: list[str], path: Any) -> None:
    """Write ``meta/tasks.parquet``: task_index and the task text as the (pandas) index."""
    table = pa.table(
        {
            "task_index": pa.array(range(len(tasks)), pa.int64()),
            "__index_level_0__": pa.array(tasks, pa.string()),
        }
    )
    pq.write_table(table.replace_schema_metadata(pandas_index_metadata(pa.__version__)), path)


def column_to_numpy(
    pa: Any, column: Any, dtype: str, shape: Sequence[int], where: str, key: str
) -> np.ndarray:
    """A (chunked) Arrow column of numbers -> ``[rows, *shape]`` numpy array, checked."""
    if column.null_count:
        raise SchemaError("column has missing (null) values", path=where, field=key)
    arr = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    rows = len(arr)
    while (
        pa.types.is_list(arr.type)
        or pa.types.is_fixed_size_list(arr.type)
        or pa.types.is_large_list(arr.type)
    ):
        arr = arr.flatten()
        if arr.null_count:
            raise SchemaError("column has missing (null) values", path=where, field=key)
    if dtype == "string":
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            raise SchemaError(
                f"expected strings, the column holds {arr.type}", path=where, field=key
            )
        return np.array(arr.to_pylist(), dtype=str).reshape(rows)
    want = np.dtype(dtype)
    if pa.types.is_boolean(arr.type):
        flat = np.array(arr.to_pylist(), dtype=bool)
    elif pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        flat = arr.to_numpy(zero_copy_only=False)
    else:
        raise SchemaError(
            f"expected {dtype} numbers, the column holds {arr.type}", path=where, field=key
        )
    per_row = int(np.prod(shape)) if list(shape) != [1] else 1
    if flat.size != rows * per_row:
        raise SchemaError(
            f"expected {per_row} value(s) per frame (shape {list(shape)}), the column holds "
            f"{flat.size} for {rows} frames",
            path=where,
            field=key,
        )
    if flat.dtype != want:
        raise SchemaError(
            f"info.json declares {dtype}, the column holds {flat.dtype}", path=where, field=key
        )
    return flat.reshape(rows) if list(shape) == [1] else flat.reshape(rows, *shape)


def refuse_pickled_types(schema: Any, where: str) -> None:
    """Refuse Arrow extension types whose deserialisation would unpickle (``arrow.py_extension_type``)."""
    for f in schema:
        meta = f.metadata or {}
        name = meta.get(b"ARROW:extension:name", b"")
        if b"py_extension_type" in name or "PyExtensionType" in type(f.type).__name__:
            raise SchemaError(
                "column uses a pickled Arrow extension type; refusing to read it (nothing here unpickles)",
                path=where,
                field=f.name,
            )


class StreamingStats:
    """Streaming min / max / mean / std / count of one feature (LeRobot's stats.json entry).

    Images are summarised per channel over all pixels, scaled to [0, 1], as
    LeRobot does; ``count`` is the number of frames. NaN (depth maps) is skipped.
    """

    def __init__(self, image: bool) -> None:
        self.image = image
        self.frames = 0
        self.n: np.ndarray | int = 0
        self.total: np.ndarray | float = 0.0
        self.total_sq: np.ndarray | float = 0.0
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None

    def add(self, values: np.ndarray) -> None:
        """Account for one episode's values ``[T, ...]``."""
        v = values.reshape(-1, values.shape[-1]) if self.image else values.reshape(len(values), -1)
        if v.dtype == np.uint8:  # images: one histogram per channel gives every statistic exactly
            c = v.shape[1]
            hist = np.bincount((v + np.arange(c, dtype=np.int32) * 256).ravel(), minlength=256 * c)
            hist = hist.reshape(c, 256)
            levels = np.arange(256, dtype=np.float64)
            seen = hist > 0
            lo, hi = seen.argmax(axis=1), 255 - seen[:, ::-1].argmax(axis=1)
            n, total, total_sq = len(v), hist @ levels, hist @ (levels * levels)
        elif v.dtype.kind in "biu":  # exact integer sums
            w = v.astype(np.int64)
            lo, hi, n = w.min(axis=0), w.max(axis=0), len(w)
            total, total_sq = (
                w.sum(axis=0).astype(np.float64),
                (w * w).sum(axis=0).astype(np.float64),
            )
        else:
            f = v.astype(np.float64)
            ok = ~np.isnan(f)
            f = np.where(ok, f, 0.0)
            lo = np.where(ok, f, np.inf).min(axis=0)
            hi = np.where(ok, f, -np.inf).max(axis=0)
            n, total, total_sq = ok.sum(axis=0), f.sum(axis=0), (f * f).sum(axis=0)
        self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else np.maximum(self.hi, hi)
        self.total = self.total + total
        self.total_sq = self.total_sq + total_sq
        self.n = self.n + n
        self.frames += len(values)

    def result(self) -> dict[str, Any]:
        """The stats.json entry."""
        assert self.lo is not None and self.hi is not None
        n = np.maximum(np.asarray(self.n), 1)
        mean = np.asarray(self.total) / n
        std = np.sqrt(np.maximum(np.asarray(self.total_sq) / n - mean**2, 0.0))
        scale = 255.0 if self.image else 1.0
        shape = (-1, 1, 1) if self.image else (-1,)
        parts = (("min", self.lo), ("max", self.hi), ("mean", mean), ("std", std))
        out = {k: (np.asarray(v, np.float64) / scale).reshape(shape) for k, v in parts}
        return {**json_ready(out), "count": [self.frames]}
