"""Episode files: the columnar, pickle-free ``.npz`` layout, its writer and reader.

Layout (version 1, see docs/episode-format.md): a zip archive with one ``.npy``
member per field holding that field stacked over time (``rgb_a.npy`` is
``uint8[T,H,W,3]``, strings are fixed-width unicode ``<U{n}[T]``), plus
``__meta__.npy``, a ``uint8`` array holding UTF-8 JSON metadata. Nothing in it
needs pickle; readers use ``numpy.load(..., allow_pickle=False)``.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from teamvla_schema.atomic import atomic_write, is_temporary
from teamvla_schema.errors import SchemaError
from teamvla_schema.fields import FieldLayout, StepLayout, step_layout, validate_step
from teamvla_schema.meta import EPISODE_FILE_VERSION, EpisodeMeta, validate_episode_meta
from teamvla_schema.zipwrite import encode_members, write_zip

log = logging.getLogger(__name__)

META_MEMBER = "__meta__"
FORMAT_NAME = "teamvla-episode"
EPISODE_SUFFIX = ".npz"


# --------------------------------------------------------------------------- writing


def _column_dtype(layout: FieldLayout) -> np.dtype:
    return np.dtype(object) if layout.dtype == "str" else np.dtype(layout.dtype)


class _Column:
    """A growing array for one field (amortised doubling; strings kept as a list)."""

    def __init__(self, layout: FieldLayout, capacity: int) -> None:
        self.layout = layout
        self.size = 0
        self.strings: list[str] | None = [] if layout.dtype == "str" else None
        self.data = (
            None
            if self.strings is not None
            else np.empty((capacity, *layout.shape), _column_dtype(layout))
        )

    def append(self, value: Any) -> None:
        if self.strings is not None:
            self.strings.append(value)
        else:
            assert self.data is not None
            if self.size == len(self.data):
                grown = np.empty((max(8, 2 * self.size), *self.layout.shape), self.data.dtype)
                grown[: self.size] = self.data
                self.data = grown
            self.data[self.size] = value
        self.size += 1

    def finish(self) -> np.ndarray:
        if self.strings is not None:
            width = max([1, *(len(s) for s in self.strings)])
            return np.array(self.strings, dtype=f"<U{width}")
        assert self.data is not None
        return self.data[: self.size]


def write_episode_arrays(
    path: str | os.PathLike[str],
    meta: EpisodeMeta,
    arrays: Mapping[str, np.ndarray],
    *,
    compress: bool = True,
    compresslevel: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Atomically write already-stacked field arrays as an episode file.

    Low-level: the arrays are checked for layout (same length, no object dtype)
    but not validated step by step; :class:`EpisodeWriter` is the usual entry.
    Large members are compressed in parallel threads.
    """
    fields: dict[str, dict[str, Any]] = {}
    items: list[tuple[str, np.ndarray]] = []
    for name, arr in arrays.items():
        if not isinstance(name, str) or not name.isidentifier() or name == META_MEMBER:
            raise SchemaError(
                f"field names must be identifiers other than {META_MEMBER!r}, received {name!r}"
            )
        if not isinstance(arr, np.ndarray) or arr.ndim == 0:
            raise SchemaError("expected an array stacked over steps (at least 1-d)", field=name)
        if arr.dtype.hasobject:
            raise SchemaError("object arrays cannot be stored (they need pickle)", field=name)
        if len(arr) != meta.num_steps:
            raise SchemaError(f"expected {meta.num_steps} steps, received {len(arr)}", field=name)
        dtype = "str" if arr.dtype.kind == "U" else str(arr.dtype)
        fields[name] = {"dtype": dtype, "shape": list(arr.shape[1:])}
        items.append((name, arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)))
    doc = {"format": FORMAT_NAME, **meta.to_dict(), "fields": fields}
    meta_bytes = np.frombuffer(json.dumps(doc, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    level = zlib.Z_DEFAULT_COMPRESSION if compresslevel is None else compresslevel
    members = encode_members([(META_MEMBER, meta_bytes), *items], compress, level)
    path = Path(path)
    with atomic_write(path, overwrite=overwrite) as fh:
        write_zip(fh, members)
    return path


class EpisodeWriter:
    """Record episodes step by step into ``ROOT/<task>/<episode_id>.npz``.

    Every :meth:`add_step` is validated against the schema and against the
    episode's first step; steps are buffered in growing per-field arrays; the
    file is written atomically at :meth:`end_episode`. Leaving a ``with`` block
    by an exception discards the unfinished episode (with a warning).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        fmt: str = "npz",
        *,
        compress: bool = True,
        compresslevel: int | None = None,
        overwrite: bool = False,
        initial_capacity: int = 64,
    ) -> None:
        if fmt != "npz":
            raise ValueError(f"unsupported episode format {fmt!r}; the only format is 'npz'")
        self.root = Path(root)
        self.compress = compress
        self.compresslevel = compresslevel
        self.overwrite = overwrite
        self.initial_capacity = initial_capacity
        self._meta: EpisodeMeta | None = None
        self._layout: StepLayout | None = None
        self._columns: dict[str, _Column] = {}
        self._num_steps = 0
        self._last_success = False
        self._auto_counter: dict[str, int] = {}

    # -- episode lifecycle
    @property
    def in_episode(self) -> bool:
        """Whether an episode has been started and not yet ended or discarded."""
        return self._meta is not None

    @property
    def num_steps(self) -> int:
        """Steps added to the current episode so far."""
        return self._num_steps

    def start_episode(self, meta: Mapping[str, Any] | EpisodeMeta) -> EpisodeMeta:
        """Begin an episode. ``meta`` needs ``task``; ``episode_id`` is generated if absent."""
        if self._meta is not None:
            raise SchemaError(
                f"episode {self._meta.episode_id!r} is still open; call end_episode() or discard_episode() first"
            )
        checked = validate_episode_meta(meta, require_id=False)
        episode_id = checked.episode_id or self._next_episode_id(checked.task)
        target = self.path_for(checked.task, episode_id)
        if target.exists() and not self.overwrite:
            raise SchemaError(
                "episode already exists (pass overwrite=True to the writer to replace it)",
                path=target,
            )
        self._meta = EpisodeMeta(
            checked.task, episode_id, checked.success, 0, EPISODE_FILE_VERSION, checked.user
        )
        self._layout = None
        self._columns = {}
        self._num_steps = 0
        return self._meta

    def add_step(self, step: Mapping[str, Any]) -> None:
        """Validate one step and append it to the current episode."""
        if self._meta is None:
            raise SchemaError("add_step() called with no open episode; call start_episode() first")
        index = self._num_steps
        clean = validate_step(step, step_index=index, layout=self._layout)
        if clean["task"] != self._meta.task:
            raise SchemaError(
                f"expected task {self._meta.task!r} (the episode's task), received {clean['task']!r}",
                field="task",
                step=index,
            )
        if self._layout is None:
            self._layout = step_layout(clean)
            self._columns = {
                n: _Column(lay, self.initial_capacity) for n, lay in self._layout.items()
            }
        for name, value in clean.items():
            self._columns[name].append(value)
        self._num_steps += 1
        self._last_success = clean["success"]

    def end_episode(self, success: bool | None = None) -> Path:
        """Write the episode atomically and return its path.

        ``success`` defaults to the last step's ``success`` flag.
        """
        if self._meta is None:
            raise SchemaError("end_episode() called with no open episode")
        if self._num_steps == 0:
            raise SchemaError(
                f"episode {self._meta.episode_id!r} has no steps; add steps or discard it"
            )
        final_success = self._last_success if success is None else bool(success)
        meta = EpisodeMeta(
            self._meta.task,
            self._meta.episode_id,
            final_success,
            self._num_steps,
            EPISODE_FILE_VERSION,
            self._meta.user,
        )
        arrays = {name: col.finish() for name, col in self._columns.items()}
        target = self.path_for(meta.task, meta.episode_id)
        try:
            path = write_episode_arrays(
                target,
                meta,
                arrays,
                compress=self.compress,
                compresslevel=self.compresslevel,
                overwrite=self.overwrite,
            )
        except FileExistsError as exc:
            raise SchemaError(f"episode already exists: {exc}", path=target) from None
        self._reset()
        return path

    def discard_episode(self) -> None:
        """Drop the current episode without writing anything."""
        self._reset()

    def close(self) -> None:
        """Discard any unfinished episode; the writer can still be reused afterwards."""
        if self._meta is not None:
            warnings.warn(
                f"EpisodeWriter closed with unfinished episode {self._meta.episode_id!r} "
                f"({self._num_steps} steps); it was discarded",
                stacklevel=2,
            )
        self._reset()

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and self._meta is not None:
            msg = (
                f"discarded unfinished episode {self._meta.episode_id!r} ({self._num_steps} steps) "
                f"because of {exc_type.__name__}: {exc}"
            )
            log.warning(msg)
            warnings.warn(msg, stacklevel=2)
            self._reset()
        else:
            self.close()

    # -- helpers
    def path_for(self, task: str, episode_id: str) -> Path:
        """Where an episode of ``task`` with ``episode_id`` is stored."""
        return self.root / task / f"{episode_id}{EPISODE_SUFFIX}"

    def _next_episode_id(self, task: str) -> str:
        # Deterministic: the next free ``<task>-NNNNNN`` in this root.
        n = self._auto_counter.get(task)
        if n is None:
            task_dir = self.root / task
            n = len(list(task_dir.glob(f"*{EPISODE_SUFFIX}"))) if task_dir.is_dir() else 0
        while self.path_for(task, f"{task}-{n:06d}").exists():
            n += 1
        self._auto_counter[task] = n + 1
        return f"{task}-{n:06d}"

    def _reset(self) -> None:
        self._meta = None
        self._layout = None
        self._columns = {}
        self._num_steps = 0
        self._last_success = False


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class EpisodeHeader:
    """Everything about an episode file except its arrays."""

    path: Path
    meta: EpisodeMeta
    fields: dict[str, FieldLayout]
    file_size: int


@dataclass(frozen=True)
class Episode:
    """An episode read from disk: its header plus the requested field arrays."""

    header: EpisodeHeader
    arrays: dict[str, np.ndarray]

    @property
    def meta(self) -> EpisodeMeta:
        return self.header.meta

    @property
    def path(self) -> Path:
        return self.header.path

    def __len__(self) -> int:
        return self.header.meta.num_steps

    def step(self, index: int) -> dict[str, Any]:
        """Step ``index`` as a plain mapping in the schema's step layout."""
        out: dict[str, Any] = {}
        for name, arr in self.arrays.items():
            value = arr[index]
            if arr.dtype.kind == "U":
                value = str(value)
            elif arr.dtype == np.bool_ and arr.ndim == 1:
                value = bool(value)
            out[name] = value
        return out

    def iter_steps(self) -> Iterator[dict[str, Any]]:
        """Iterate over the steps in order."""
        for i in range(len(self)):
            yield self.step(i)


def is_episode_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names an episode file (not a writer's temporary file)."""
    return os.fspath(path).endswith(EPISODE_SUFFIX) and not is_temporary(path)


def find_episodes(root: str | os.PathLike[str]) -> list[Path]:
    """All episode files under ``root``, sorted by path."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise SchemaError("episode root does not exist or is not a directory", path=root)
    return sorted(p for p in root.rglob(f"*{EPISODE_SUFFIX}") if is_episode_file(p) and p.is_file())


def _open_npz(path: Path) -> zipfile.ZipFile:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SchemaError(f"cannot open episode file: {exc.strerror}", path=path) from None
    if size == 0:
        raise SchemaError("empty file (0 bytes); expected a TeamVLA episode .npz", path=path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise SchemaError(f"cannot open episode file: {exc.strerror}", path=path) from None
    if magic != b"PK\x03\x04":
        raise SchemaError(f"not an npz (zip) file (starts with {magic!r})", path=path)
    try:
        return zipfile.ZipFile(path, "r")
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        ValueError,
        EOFError,
        NotImplementedError,
    ) as exc:
        raise SchemaError(f"truncated or corrupt npz file: {exc}", path=path) from None


# zlib's deflate cannot expand data by more than about 1032:1.
_MAX_DEFLATE_RATIO = 1032


def _member_names(zf: zipfile.ZipFile) -> set[str]:
    return {n[: -len(".npy")] for n in zf.namelist() if n.endswith(".npy")}


def _load_member(
    zf: zipfile.ZipFile,
    name: str,
    path: Path,
    expected: tuple[FieldLayout, int] | None = None,
) -> np.ndarray:
    """Read one ``.npy`` member, checking its header before any data is read.

    Object (pickled) arrays are refused from the header alone, so no pickle is
    ever loaded; a header declaring more bytes than the member can hold is
    refused before memory is allocated; with ``expected`` (the field's layout
    and the episode's step count from the metadata) a member whose dtype or
    shape differs is refused before its data is decompressed.
    """
    member = f"{name}.npy"
    try:
        info = zf.getinfo(member)
    except KeyError:
        raise SchemaError("array member is missing", path=path, field=name) from None
    try:
        with zf.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise SchemaError(
                    f"unsupported .npy format version {version}", path=path, field=name
                )
    except SchemaError:
        raise
    except (
        zipfile.BadZipFile,
        zlib.error,
        OSError,
        EOFError,
        ValueError,
        TypeError,
        SyntaxError,
    ) as exc:
        raise SchemaError(
            f"truncated or corrupt member header: {exc}", path=path, field=name
        ) from None
    except (NotImplementedError, RuntimeError) as exc:  # unsupported compression method, encryption
        raise SchemaError(f"unreadable zip member: {exc}", path=path, field=name) from None
    if dtype.hasobject:
        raise SchemaError(
            "member is an object array (pickled Python objects); refusing to load it: "
            "episode files never contain pickles",
            path=path,
            field=name,
        )
    nbytes = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    capacity = info.file_size
    if info.compress_type != zipfile.ZIP_STORED:
        capacity = min(capacity, _MAX_DEFLATE_RATIO * info.compress_size + 4096)
    if nbytes > capacity:
        raise SchemaError(
            f"member header declares {dtype}{list(shape)} ({nbytes} bytes) but the member holds at most "
            f"{capacity} bytes: truncated or corrupt",
            path=path,
            field=name,
        )
    if expected is not None:
        layout, num_steps = expected
        want_shape = (num_steps, *layout.shape)
        got_dtype = "str" if dtype.kind == "U" else str(dtype)
        if got_dtype != layout.dtype or tuple(shape) != want_shape:
            raise SchemaError(
                f"expected {layout.dtype}{list(want_shape)} as declared in the metadata, "
                f"received {dtype}{list(shape)}",
                path=path,
                field=name,
            )
    try:
        with zf.open(info) as fh:
            arr = np.lib.format.read_array(fh, allow_pickle=False)
            # Reading to the end makes zipfile verify the member's CRC-32.
            if fh.read(1):
                raise ValueError("unexpected bytes after the array data")
    except (
        zipfile.BadZipFile,
        zlib.error,
        OSError,
        EOFError,
        ValueError,
        MemoryError,
        NotImplementedError,
        RuntimeError,
    ) as exc:
        raise SchemaError(f"truncated or corrupt member: {exc}", path=path, field=name) from None
    if arr.dtype.hasobject:  # pragma: no cover - excluded by the header check above
        raise SchemaError("member is an object array; refusing it", path=path, field=name)
    return arr


def _header_from_npz(zf: zipfile.ZipFile, path: Path) -> EpisodeHeader:
    members = _member_names(zf)
    if META_MEMBER not in members:
        legacy = (
            " (it looks like a seed-format file of pickled object arrays)"
            if {"meta", "steps"} & members
            else ""
        )
        raise SchemaError(
            f"not a TeamVLA episode file: no {META_MEMBER!r} member{legacy}", path=path
        )
    raw = _load_member(zf, META_MEMBER, path)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise SchemaError(
            f"expected uint8[n] JSON bytes, received {raw.dtype}{raw.shape}",
            path=path,
            field=META_MEMBER,
        )
    try:
        doc = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SchemaError(
            f"metadata is not valid UTF-8 JSON: {exc}", path=path, field=META_MEMBER
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise SchemaError(
            f"metadata 'format' must be {FORMAT_NAME!r}", path=path, field=META_MEMBER
        )
    version = doc.get("version")
    if (
        isinstance(version, int)
        and not isinstance(version, bool)
        and version > EPISODE_FILE_VERSION
    ):
        raise SchemaError(
            f"file format version {version} is newer than this reader supports ({EPISODE_FILE_VERSION}); "
            "upgrade teamvla-schema to read it",
            path=path,
            field="version",
        )
    fields_doc = doc.pop("fields", None)
    doc.pop("format")
    try:
        meta = validate_episode_meta(doc)
    except SchemaError as exc:
        raise exc.with_path(path) from None
    if not isinstance(fields_doc, dict):
        raise SchemaError("metadata has no 'fields' table", path=path, field=META_MEMBER)
    fields: dict[str, FieldLayout] = {}
    for name, spec in fields_doc.items():
        try:
            dtype = str(spec["dtype"])
            shape = spec["shape"]
            if dtype != "str":
                np.dtype(dtype)
            if not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
            ):
                raise ValueError(shape)
        except (KeyError, TypeError, ValueError):
            raise SchemaError(
                f"bad field entry {spec!r} in metadata", path=path, field=name
            ) from None
        fields[name] = FieldLayout(dtype, tuple(shape))
        if name == META_MEMBER or name not in members:
            raise SchemaError("field listed in metadata has no array member", path=path, field=name)
    return EpisodeHeader(path, meta, fields, path.stat().st_size)


def read_episode_meta(path: str | os.PathLike[str]) -> EpisodeHeader:
    """Read only an episode's metadata and field layout (no arrays are decompressed)."""
    path = Path(path)
    with _open_npz(path) as zf:
        return _header_from_npz(zf, path)


def read_episode(path: str | os.PathLike[str], fields: Sequence[str] | None = None) -> Episode:
    """Read an episode: metadata plus the arrays of ``fields`` (all when ``None``).

    Only the requested members are decompressed. Every array is checked against
    the metadata (dtype, per-step shape, number of steps) from its ``.npy``
    header, before its data is read.
    """
    path = Path(path)
    with _open_npz(path) as zf:
        header = _header_from_npz(zf, path)
        names = list(header.fields) if fields is None else list(fields)
        arrays: dict[str, np.ndarray] = {}
        for name in names:
            layout = header.fields.get(name)
            if layout is None:
                raise SchemaError(
                    f"no such field; the episode has {sorted(header.fields)}", path=path, field=name
                )
            arrays[name] = _load_member(zf, name, path, (layout, header.meta.num_steps))
    return Episode(header, arrays)


def iter_steps(
    path: str | os.PathLike[str], fields: Sequence[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Iterate over the steps of an episode file."""
    yield from read_episode(path, fields).iter_steps()


def validate_episode_file(path: str | os.PathLike[str]) -> EpisodeHeader:
    """Fully check an episode file: readable, declared layout, schema fields, finite values.

    Reads and decompresses every array (use :func:`read_episode_meta` for a
    cheap check). Raises :class:`SchemaError` naming the file, field and, for
    non-finite values, the first bad step.
    """
    from teamvla_schema.fields import _EXTRA_DTYPES, KNOWN_FIELDS, REQUIRED_FIELDS

    episode = read_episode(path)
    header = episode.header
    missing = [n for n in REQUIRED_FIELDS if n not in header.fields]
    if missing:
        raise SchemaError(
            f"missing required field(s) {missing}", path=header.path, field=missing[0]
        )
    if header.meta.num_steps == 0:
        raise SchemaError("episode has no steps", path=header.path)
    dims: dict[str, tuple[int, str]] = {}
    for name, spec in KNOWN_FIELDS.items():
        if name not in header.fields:
            continue
        layout = header.fields[name]
        expected = "str" if spec.kind == "str" else ("bool" if spec.kind == "bool" else spec.dtype)
        ok = layout.dtype == expected and len(layout.shape) == len(spec.shape)
        for dim, size in zip(spec.shape, layout.shape, strict=False):
            if isinstance(dim, int) and dim != size:
                ok = False
            elif isinstance(dim, str):
                if dim in dims and dims[dim][0] != size:
                    ok = False
                dims.setdefault(dim, (size, name))
        if not ok:
            raise SchemaError(
                f"expected {spec.describe()} per step, received {layout.dtype}{list(layout.shape)}",
                path=header.path,
                field=name,
            )
        arr = episode.arrays[name]
        if arr.dtype.kind == "f" and not spec.allow_nonfinite:
            finite = np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
            if not finite.all():
                raise SchemaError(
                    "expected finite values, received NaN/inf",
                    path=header.path,
                    field=name,
                    step=int(np.argmin(finite)),
                )
    for name in header.fields:
        if name in KNOWN_FIELDS:
            continue
        arr = episode.arrays[name]
        if arr.dtype.kind != "U" and arr.dtype not in _EXTRA_DTYPES:
            raise SchemaError(
                f"extra field must hold bool, [u]int8..64, float16/32/64 or str values, received {arr.dtype}",
                path=header.path,
                field=name,
            )
        if arr.dtype.kind == "f":
            finite = np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
            if not finite.all():
                raise SchemaError(
                    "expected finite values, received NaN/inf",
                    path=header.path,
                    field=name,
                    step=int(np.argmin(finite)),
                )
    task = episode.arrays["task"]
    if not np.all(task == header.meta.task):
        bad = int(np.argmax(task != header.meta.task))
        raise SchemaError(
            f"expected task {header.meta.task!r} (the episode's task), received {str(task[bad])!r}",
            path=header.path,
            field="task",
            step=bad,
        )
    return header
