"""Episode files: the columnar, pickle-free ``.npz`` layout, its writer and reader.

Layout (version 1, see docs/episode-format.md): a zip archive with one ``.npy``
member per field holding that field stacked over time (``rgb_a.npy`` is
``uint8[T,H,W,3]``, strings are fixed-width unicode ``<U{n}[T]``), plus
``__meta__.npy``, a ``uint8`` array holding UTF-8 JSON metadata. Nothing in it
needs pickle; readers use ``numpy.load(..., allow_pickle=False)``.

With an ``image_codec`` the camera fields' members hold codec streams instead
(``uint8[n]``), listed in the metadata's ``encodings`` table; the readers here
decode them transparently (:mod:`teamvla_schema.episode_codec`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import stat
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from teamvla_schema.atomic import atomic_write, file_kind, is_temporary, open_regular
from teamvla_schema.codecs.file_range import FileRange
from teamvla_schema.episode_codec import (
    CodecChoice,
    FieldEncoding,
    check_field,
    decode_field,
    decode_field_range,
    encode_image_fields,
    parse_encodings,
    reads_ranges,
    writer_codec,
)
from teamvla_schema.errors import SchemaError
from teamvla_schema.fields import FieldLayout, StepLayout, step_layout, validate_step
from teamvla_schema.meta import EPISODE_FILE_VERSION, EpisodeMeta, validate_episode_meta
from teamvla_schema.npy_header import read_array_header
from teamvla_schema.stream_places import StreamPlaces
from teamvla_schema.zipwrite import encode_members, write_zip

log = logging.getLogger(__name__)

META_MEMBER = "__meta__"
FORMAT_NAME = "teamvla-episode"
EPISODE_SUFFIX = ".npz"
ENCODINGS_KEY = "encodings"


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


def _encode_arrays(
    meta: EpisodeMeta,
    arrays: Mapping[str, np.ndarray],
    compress: bool,
    compresslevel: int | None,
    codec: CodecChoice = None,
) -> tuple[dict[str, dict[str, Any]], list[Any], dict[str, FieldEncoding]]:
    """Check and encode (compress) the field arrays: the expensive part of writing, done once.

    With ``codec`` the camera fields become codec streams, stored uncompressed
    (they do not deflate); everything else is deflated as without it.
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
    level = zlib.Z_DEFAULT_COMPRESSION if compresslevel is None else compresslevel
    if codec is None:
        return fields, encode_members(items, compress, level), {}
    streams, encodings = encode_image_fields(dict(items), *codec)
    plain = encode_members([(n, a) for n, a in items if n not in streams], compress, level)
    stored = encode_members(list(streams.items()), False, level)
    by_name = {m.name: m for m in [*plain, *stored]}
    # Members stay in the order of the fields (the first step's keys), encoded or not.
    return fields, [by_name[f"{n}.npy".encode()] for n, _ in items], encodings


def _publish(
    path: Path,
    meta: EpisodeMeta,
    fields: dict[str, dict[str, Any]],
    members: list[Any],
    compress: bool,
    compresslevel: int | None,
    overwrite: bool,
    encodings: Mapping[str, FieldEncoding] | None = None,
) -> None:
    """Write the metadata member plus the encoded arrays to ``path`` atomically."""
    doc: dict[str, Any] = {"format": FORMAT_NAME, **meta.to_dict(), "fields": fields}
    if encodings:  # absent without a codec: such files stay byte-identical to before
        doc[ENCODINGS_KEY] = {name: enc.to_dict() for name, enc in encodings.items()}
    meta_bytes = np.frombuffer(json.dumps(doc, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    level = zlib.Z_DEFAULT_COMPRESSION if compresslevel is None else compresslevel
    head = encode_members([(META_MEMBER, meta_bytes)], compress, level)
    with atomic_write(path, overwrite=overwrite) as fh:
        write_zip(fh, [*head, *members])


def _naming(exc: OSError, path: Path) -> OSError:
    """The same OS error (same errno and type), its message naming the episode file."""
    return type(exc)(exc.errno, f"cannot write episode file ({exc.strerror})", str(path))


def write_episode_arrays(
    path: str | os.PathLike[str],
    meta: EpisodeMeta,
    arrays: Mapping[str, np.ndarray],
    *,
    compress: bool = True,
    compresslevel: int | None = None,
    overwrite: bool = False,
    image_codec: str | None = None,
    video_crf: int = 30,
) -> Path:
    """Atomically write already-stacked field arrays as an episode file.

    Low-level: the arrays are checked for layout (same length, no object dtype)
    but not validated step by step; :class:`EpisodeWriter` is the usual entry.
    Large members are compressed in parallel threads. An existing ``path``
    raises ``FileExistsError`` unless ``overwrite``; a failed write (disk full)
    raises ``OSError`` naming ``path`` and leaves whatever was there untouched.
    ``image_codec`` and ``video_crf`` are as for :class:`EpisodeWriter`.
    """
    path = Path(path)
    codec = writer_codec(image_codec, video_crf, path)
    fields, members, encodings = _encode_arrays(meta, arrays, compress, compresslevel, codec)
    try:
        _publish(path, meta, fields, members, compress, compresslevel, overwrite, encodings)
    except FileExistsError:
        raise
    except OSError as exc:
        raise _naming(exc, path) from exc
    return path


#: How many times a writer with generated ids moves on to the next free id when
#: another writer publishes the id it picked first.
_MAX_ID_RETRIES = 1000


class EpisodeWriter:
    """Record episodes step by step into ``ROOT/<task>/<episode_id>.npz``.

    Every :meth:`add_step` is validated against the schema and against the
    episode's first step; steps are buffered in growing per-field arrays; the
    file is written atomically at :meth:`end_episode`. Leaving a ``with`` block
    by an exception discards the unfinished episode (with a warning).

    Several writers (threads or processes) may record into one root at once:
    no file is ever overwritten unless ``overwrite=True``. A generated id is
    only a first choice; if another writer publishes that id first,
    :meth:`end_episode` takes the next free one (the returned path tells which).
    An explicit ``episode_id`` that another writer published first is a
    :class:`SchemaError`. If writing fails (disk full: ``OSError`` naming the
    file), nothing is left on disk and the episode stays open, so
    :meth:`end_episode` can be retried or the episode discarded. A writer
    object itself is not thread-safe: use one per thread.

    ``image_codec`` stores the camera fields (``rgb_a``, ``rgb_b``) as image
    streams instead of arrays of pixels: ``"lossless"`` (bit-exact, about 0.8x
    the bytes of per-frame PNG on camera-like frames) or ``"video"`` (lossy AV1,
    quality ``video_crf`` 0..63, lower is better; the PSNR is measured and
    recorded in the file). Both need PyAV (``pip install "teamvla-schema[video]"``;
    without it the writer refuses to start with a one-line ``ImportError``).
    ``None`` (the default) writes exactly what it always wrote. Steps are
    validated as always; the streams are encoded at :meth:`end_episode`, before
    the file is opened, so a writer killed while encoding leaves no file.
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
        image_codec: str | None = None,
        video_crf: int = 30,
    ) -> None:
        if fmt != "npz":
            raise ValueError(f"unsupported episode format {fmt!r}; the only format is 'npz'")
        self.root = Path(root)
        self._codec = writer_codec(image_codec, video_crf, self.root)  # fails before any step
        self.image_codec = image_codec
        self.video_crf = video_crf
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
        self._auto_id = False

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
        auto_id = not checked.episode_id
        episode_id = checked.episode_id or self._next_episode_id(checked.task)
        target = self.path_for(checked.task, episode_id)
        # A generated id that another writer takes meanwhile is no error: end_episode() moves
        # on to the next free id. An explicit id that exists is refused now, before any work.
        if not auto_id and target.exists() and not self.overwrite:
            raise SchemaError(
                "episode already exists (pass overwrite=True to the writer to replace it)",
                path=target,
            )
        # replace(), not a field-by-field rebuild: optional metadata (fps, ...) must survive.
        self._meta = dataclasses.replace(
            checked, episode_id=episode_id, num_steps=0, version=EPISODE_FILE_VERSION
        )
        self._layout = None
        self._columns = {}
        self._num_steps = 0
        self._auto_id = auto_id
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
        meta = dataclasses.replace(
            self._meta,
            success=final_success,
            num_steps=self._num_steps,
            version=EPISODE_FILE_VERSION,
        )
        arrays = {name: col.finish() for name, col in self._columns.items()}
        fields, members, encodings = _encode_arrays(
            meta, arrays, self.compress, self.compresslevel, self._codec
        )
        for _ in range(_MAX_ID_RETRIES):
            target = self.path_for(meta.task, meta.episode_id)
            try:
                # A generated id never replaces a file, whatever ``overwrite`` says.
                _publish(
                    target,
                    meta,
                    fields,
                    members,
                    self.compress,
                    self.compresslevel,
                    self.overwrite and not self._auto_id,
                    encodings,
                )
            except FileExistsError:
                if not self._auto_id:
                    raise SchemaError(
                        "episode already exists (written by another writer meanwhile; pass "
                        "overwrite=True to the writer to replace it)",
                        path=target,
                    ) from None
                # Another writer published this generated id first: take the next free one.
                meta = dataclasses.replace(meta, episode_id=self._next_episode_id(meta.task))
                continue
            except OSError as exc:
                raise _naming(exc, target) from exc
            self._reset()
            return target
        raise SchemaError(
            f"no free episode id found after {_MAX_ID_RETRIES} attempts", path=self.root / meta.task
        )

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
        self._auto_id = False


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class EpisodeHeader:
    """Everything about an episode file except its arrays.

    ``fields`` holds every field's per-step layout as the readers return it
    (decoded); ``encodings`` names the fields stored as codec streams and how
    (empty for files written without ``image_codec``).
    """

    path: Path
    meta: EpisodeMeta
    fields: dict[str, FieldLayout]
    file_size: int
    encodings: dict[str, FieldEncoding] = dataclasses.field(default_factory=dict)


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


def walk_tree(
    root: str | os.PathLike[str],
    *,
    skip_hidden: bool = False,
    on_error: Callable[[SchemaError], None] | None = None,
) -> Iterator[tuple[str, list[os.DirEntry[str]]]]:
    """Every entry under ``root`` that is not a directory, as ``(relative prefix, entries)`` per directory.

    Symbolic links are followed, to files and to directories, but each real
    directory is walked once (keyed by device and inode): a symlink loop ends,
    and a directory reachable under two names is listed under its real name
    when it is inside ``root`` (real directories are walked before symlinked
    ones), otherwise under the first symlink in sorted order. Entries that are
    not directories are yielded whatever they are (file, FIFO, device,
    dangling or looping symlink), so that callers can report bad ones rather
    than skip them. With ``skip_hidden`` names starting with ``.`` are left
    out. A directory that cannot be listed raises :class:`SchemaError` naming
    it, or is passed to ``on_error`` and skipped.
    """
    root = Path(root)
    visited: set[tuple[int, int]] = set()
    try:
        st = os.stat(root)
        visited.add((st.st_dev, st.st_ino))
    except OSError:
        pass  # reported by scandir below
    real: list[tuple[str, str]] = [(os.fspath(root), "")]
    linked: list[tuple[str, str]] = []  # symlinked directories, walked after the real ones
    while real or linked:
        if real:
            directory, prefix = real.pop()
        else:
            directory, prefix = linked.pop()
            try:
                st = os.stat(directory)
            except OSError:
                continue  # vanished meanwhile
            if (st.st_dev, st.st_ino) in visited:
                log.info("not walking %s again: it leads to a directory already walked", directory)
                continue
            visited.add((st.st_dev, st.st_ino))
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError as exc:
            err = SchemaError(f"cannot list directory: {exc.strerror}", path=directory)
            if on_error is None:
                raise err from None
            on_error(err)
            continue
        subdirs: list[tuple[str, str, bool]] = []
        others: list[os.DirEntry[str]] = []
        for entry in entries:
            if skip_hidden and entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()  # follows symlinks; False for a dangling one
            except OSError:  # a symlink loop (ELOOP) or an unreachable target: not a directory
                is_dir = False
            if is_dir:
                subdirs.append((entry.path, f"{prefix}{entry.name}/", entry.is_symlink()))
            else:
                others.append(entry)
        if others:
            yield prefix, others
        # Sorted so that which name a doubly reachable directory gets is deterministic.
        for path, sub_prefix, is_link in sorted(subdirs, reverse=True):
            if is_link:
                linked.append((path, sub_prefix))
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in visited:
                visited.add((st.st_dev, st.st_ino))
                real.append((path, sub_prefix))
        if not real:
            linked.sort(reverse=True)


def find_episodes(
    root: str | os.PathLike[str], *, on_error: Callable[[SchemaError], None] | None = None
) -> list[Path]:
    """All episode files under ``root`` (or ``root`` itself if it is a file), sorted by path.

    Every ``*.npz`` name that is not a writer's temporary file is listed, even
    when it is not a readable regular file (a dangling symlink, a FIFO): the
    readers then say what is wrong with it. Directory symlinks are followed
    (see :func:`walk_tree`). A directory that cannot be listed raises
    :class:`SchemaError` naming it, or, with ``on_error``, is reported to it.
    """
    root = Path(root)
    try:
        st = os.stat(root)
    except OSError as exc:
        raise SchemaError(
            f"episode root does not exist or cannot be reached: {exc.strerror}", path=root
        ) from None
    if stat.S_ISREG(st.st_mode):
        return [root]
    if not stat.S_ISDIR(st.st_mode):
        raise SchemaError(
            f"expected an episode root directory or an episode file, found {file_kind(st.st_mode)}",
            path=root,
        )
    found = [
        root / f"{prefix}{entry.name}"
        for prefix, entries in walk_tree(root, on_error=on_error)
        for entry in entries
        if is_episode_file(entry.name)
    ]
    return sorted(found)


#: The largest ``__meta__`` member accepted, checked against its declared size before inflating it.
MAX_META_BYTES = 16 << 20
# zlib's deflate cannot expand data by more than about 1032:1.
_MAX_DEFLATE_RATIO = 1032
# What a member may hold beyond the data its metadata implies: room for the .npy header.
_MAX_NPY_HEADER_BYTES = 1 << 20
# Data is read (and checked) in pieces of this size.
_READ_CHUNK = 1 << 20
_VALIDATE_CHUNK = 4 << 20
_CORRUPT = (
    zipfile.BadZipFile,
    zlib.error,
    OSError,
    EOFError,
    ValueError,
    TypeError,
    SyntaxError,
    MemoryError,
    OverflowError,
)


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[tuple[IO[bytes], os.stat_result]]:
    """The episode file opened for reading, plus its ``fstat``; only regular files are opened."""
    try:
        fh, st = open_regular(path)
    except OSError as exc:
        raise SchemaError(f"cannot open episode file: {exc.strerror}", path=path) from None
    with fh:
        if st.st_size == 0:
            raise SchemaError("empty file (0 bytes); expected a TeamVLA episode .npz", path=path)
        yield fh, st


@contextlib.contextmanager
def _zip_of(fh: IO[bytes], path: Path) -> Iterator[zipfile.ZipFile]:
    """The open episode file as a zip archive (the caller keeps ``fh`` open)."""
    try:
        magic = fh.read(4)
        fh.seek(0)
    except OSError as exc:
        raise SchemaError(f"cannot read episode file: {exc.strerror}", path=path) from None
    if magic != b"PK\x03\x04":
        raise SchemaError(f"not an npz (zip) file (starts with {magic!r})", path=path)
    try:
        zf = zipfile.ZipFile(fh, "r")
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        ValueError,
        EOFError,
        NotImplementedError,
    ) as exc:
        raise SchemaError(f"truncated or corrupt npz file: {exc}", path=path) from None
    with zf:
        yield zf


@contextlib.contextmanager
def _open_npz(path: Path) -> Iterator[tuple[zipfile.ZipFile, int]]:
    """The episode file as a zip archive, plus its size; only regular files are opened."""
    with _opened(path) as (fh, st), _zip_of(fh, path) as zf:
        yield zf, st.st_size


def _member_names(zf: zipfile.ZipFile) -> set[str]:
    return {n[: -len(".npy")] for n in zf.namelist() if n.endswith(".npy")}


def _capacity(info: zipfile.ZipInfo, file_size: int) -> int:
    """The most bytes a member can inflate to: its declared size, bounded by what its data can hold."""
    stored = min(info.compress_size, file_size)
    if info.compress_type == zipfile.ZIP_STORED:
        return min(info.file_size, stored)
    return min(info.file_size, _MAX_DEFLATE_RATIO * stored + 4096)


def _check_method(info: zipfile.ZipInfo, path: Path, name: str) -> None:
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise SchemaError(
            f"unsupported compression method {info.compress_type} (episode files are stored "
            "or deflated)",
            path=path,
            field=name,
        )


@contextlib.contextmanager
def _member_data(
    zf: zipfile.ZipFile,
    name: str,
    path: Path,
    file_size: int,
    expected: tuple[str, tuple[int, ...]] | None = None,
) -> Iterator[tuple[IO[bytes], tuple[int, ...], np.dtype, bool]]:
    """One ``.npy`` member, opened and positioned at its data, after checking its header.

    Object (pickled) arrays are refused from the header alone, so no pickle is
    ever loaded. Before any data is inflated: the zip entry's declared size
    must equal the size the header implies (so nothing can inflate past it:
    zipfile stops at the declared size and checks the CRC), and that size must
    fit what the compressed bytes can hold; with ``expected`` (the dtype name and
    whole shape the metadata implies, see :func:`_expected`) the header's dtype
    and shape must be the declared ones. Yields ``(stream, shape, dtype, fortran_order)``.
    """
    member = f"{name}.npy"
    try:
        info = zf.getinfo(member)
    except KeyError:
        raise SchemaError("array member is missing", path=path, field=name) from None
    _check_method(info, path, name)
    try:
        fh = zf.open(info)
    except (NotImplementedError, RuntimeError) as exc:  # encryption, unknown methods
        raise SchemaError(f"unreadable zip member: {exc}", path=path, field=name) from None
    except _CORRUPT as exc:
        raise SchemaError(f"truncated or corrupt member: {exc}", path=path, field=name) from None
    with fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version in ((1, 0), (2, 0)):
                shape, fortran, dtype = read_array_header(fh, version)
            else:
                raise SchemaError(
                    f"unsupported .npy format version {version}", path=path, field=name
                )
            header_len = fh.tell()
        except SchemaError:
            raise
        except (NotImplementedError, RuntimeError) as exc:
            raise SchemaError(f"unreadable zip member: {exc}", path=path, field=name) from None
        except _CORRUPT as exc:
            raise SchemaError(
                f"truncated or corrupt member header: {exc}", path=path, field=name
            ) from None
        if dtype.hasobject:
            raise SchemaError(
                "member is an object array (pickled Python objects); refusing to load it: "
                "episode files never contain pickles",
                path=path,
                field=name,
            )
        if any(d < 0 for d in shape):
            raise SchemaError(
                f"member header declares a negative dimension {list(shape)}", path=path, field=name
            )
        nbytes = math.prod(shape) * dtype.itemsize
        capacity = _capacity(info, file_size) - header_len
        if nbytes > capacity:
            raise SchemaError(
                f"member header declares {dtype}{list(shape)} ({nbytes} bytes) but the member "
                f"holds at most {max(capacity, 0)} bytes: truncated or corrupt",
                path=path,
                field=name,
            )
        if info.file_size != header_len + nbytes:
            raise SchemaError(
                f"zip entry declares {info.file_size} bytes but the npy header {dtype}{list(shape)} "
                f"and step count imply {header_len + nbytes}: unexpected bytes after the array data "
                "(corrupt, or a zip bomb; not inflated)",
                path=path,
                field=name,
            )
        if expected is not None:
            want_dtype, want_shape = expected
            got_dtype = "str" if dtype.kind == "U" else str(dtype)
            if got_dtype != want_dtype or tuple(shape) != want_shape:
                raise SchemaError(
                    f"expected {want_dtype}{list(want_shape)} as declared in the metadata, "
                    f"received {dtype}{list(shape)}",
                    path=path,
                    field=name,
                )
        yield fh, tuple(shape), dtype, bool(fortran)


def _read_exactly(
    fh: IO[bytes], dest: np.ndarray, path: Path, name: str, *, to_end: bool = True
) -> None:
    """Fill the uint8 array ``dest`` from ``fh`` in pieces, then (``to_end``) make sure the member ends there."""
    total, done = dest.size, 0
    while done < total:
        chunk = fh.read(min(_READ_CHUNK, total - done))
        if not chunk:
            raise SchemaError(
                f"truncated member: {done} of {total} data bytes", path=path, field=name
            )
        dest[done : done + len(chunk)] = np.frombuffer(chunk, np.uint8)
        done += len(chunk)
    # Reading to the end makes zipfile verify the member's CRC-32.
    if to_end and fh.read(1):
        raise SchemaError("unexpected bytes after the array data", path=path, field=name)


def _expected(header: EpisodeHeader, name: str) -> tuple[str, tuple[int, ...]]:
    """The dtype name and whole shape of field ``name``'s member, as the metadata implies.

    ``T`` rows of the field's layout, or for an encoded field its stream: ``uint8[bytes]``.
    """
    enc = header.encodings.get(name)
    if enc is not None:
        return "uint8", (enc.nbytes,)
    layout = header.fields[name]
    return layout.dtype, (header.meta.num_steps, *layout.shape)


def _load_member(
    zf: zipfile.ZipFile,
    name: str,
    path: Path,
    file_size: int,
    expected: tuple[str, tuple[int, ...]] | None = None,
) -> np.ndarray:
    """Read one ``.npy`` member whole (see :func:`_member_data` for the checks made first)."""
    with _member_data(zf, name, path, file_size, expected) as (fh, shape, dtype, fortran):
        try:
            # Fortran-order data is the C-order data of the transposed array.
            arr = np.empty(shape[::-1] if fortran else shape, dtype)
            _read_exactly(fh, arr.reshape(-1).view(np.uint8), path, name)
        except SchemaError:
            raise
        except (NotImplementedError, RuntimeError, *_CORRUPT) as exc:
            raise SchemaError(
                f"truncated or corrupt member: {exc}", path=path, field=name
            ) from None
    return arr.T if fortran else arr


def _check_declared_total(
    fields: Mapping[str, FieldLayout], num_steps: int, path: Path, file_size: int
) -> None:
    """Refuse metadata that promises more array data than the whole file could inflate to.

    Callers allocate by the metadata (the dataset sizes its columns from it), so
    a step count of 10**9 in a small file must not get past
    :func:`read_episode_meta`. The bound is deflate's maximum ratio times the
    file's size: memory used for any episode stays within about 1000 times its
    size on disk. (Whether each member matches the metadata exactly is checked
    when the member is read, from its own header, before inflating it.) Encoded
    fields are bounded separately (:func:`~teamvla_schema.episode_codec.parse_encodings`).
    """
    sizes = {}
    for name, layout in fields.items():
        itemsize = 4 if layout.dtype == "str" else np.dtype(layout.dtype).itemsize
        sizes[name] = num_steps * math.prod(layout.shape) * itemsize  # str: >= 1 code unit
    limit = _MAX_DEFLATE_RATIO * file_size + 4096 * len(fields)
    total = sum(sizes.values())
    if total > limit:
        biggest = max(sizes, key=lambda n: sizes[n])
        layout = fields[biggest]
        raise SchemaError(
            f"metadata declares {num_steps} steps ({total} bytes of arrays, {sizes[biggest]} of "
            f"them {layout.dtype}{list(layout.shape)} per step here), more than this "
            f"{file_size}-byte file can hold even at deflate's maximum ratio: corrupt or hostile",
            path=path,
            field=biggest,
        )


def _header_from_npz(zf: zipfile.ZipFile, path: Path, file_size: int) -> EpisodeHeader:
    by_name: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        if info.filename in by_name:
            raise SchemaError(
                f"duplicate member {info.filename!r} in the zip directory (ambiguous; refusing "
                "to pick one)",
                path=path,
            )
        by_name[info.filename] = info
    members = _member_names(zf)
    meta_info = by_name.get(f"{META_MEMBER}.npy")
    if meta_info is None:
        legacy = (
            " (it looks like a seed-format file of pickled object arrays)"
            if {"meta", "steps"} & members
            else ""
        )
        raise SchemaError(
            f"not a TeamVLA episode file: no {META_MEMBER!r} member{legacy}", path=path
        )
    if meta_info.file_size > MAX_META_BYTES:
        raise SchemaError(
            f"metadata member declares {meta_info.file_size} bytes, larger than the "
            f"{MAX_META_BYTES} bytes allowed for metadata: corrupt or a zip bomb (not inflated)",
            path=path,
            field=META_MEMBER,
        )
    raw = _load_member(zf, META_MEMBER, path, file_size)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise SchemaError(
            f"expected uint8[n] JSON bytes, received {raw.dtype}{raw.shape}",
            path=path,
            field=META_MEMBER,
        )
    try:
        doc = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError: JSON syntax, and Python's limit on int literals (4300 digits)
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
    encodings_doc = doc.pop(ENCODINGS_KEY, None)
    doc.pop("format")
    try:
        meta = validate_episode_meta(doc)
    except SchemaError as exc:
        raise exc.with_path(path) from None
    if not isinstance(fields_doc, dict):
        raise SchemaError("metadata has no 'fields' table", path=path, field=META_MEMBER)
    fields: dict[str, FieldLayout] = {}
    for name, spec in fields_doc.items():
        if not name.isidentifier() or name == META_MEMBER:
            raise SchemaError(
                f"field names must be identifiers other than {META_MEMBER!r}, received {name!r}",
                path=path,
                field=META_MEMBER,
            )
        try:
            dtype = str(spec["dtype"])
            shape = spec["shape"]
            if dtype != "str":
                np.dtype(dtype)
            if not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
            ):
                raise ValueError(shape)
        except (KeyError, TypeError, ValueError, SyntaxError):
            raise SchemaError(
                f"bad field entry {spec!r} in metadata", path=path, field=name
            ) from None
        fields[name] = FieldLayout(dtype, tuple(shape))
        if f"{name}.npy" not in by_name:
            raise SchemaError("field listed in metadata has no array member", path=path, field=name)
    if len(by_name) != len(fields) + 1:
        expected = {f"{META_MEMBER}.npy", *(f"{n}.npy" for n in fields)}
        extra = sorted(set(by_name) - expected)[0]
        raise SchemaError(
            f"unexpected member {extra!r}: not listed in the metadata's fields (an episode file "
            f"holds {META_MEMBER}.npy and one <field>.npy per field, nothing else)",
            path=path,
        )
    stored = {n: min(by_name[f"{n}.npy"].compress_size, file_size) for n in fields}
    encodings = parse_encodings(encodings_doc, fields, meta.num_steps, path, stored)
    plain = {n: lay for n, lay in fields.items() if n not in encodings}
    _check_declared_total(plain, meta.num_steps, path, file_size)
    return EpisodeHeader(path, meta, fields, file_size, encodings)


def read_episode_meta(path: str | os.PathLike[str]) -> EpisodeHeader:
    """Read only an episode's metadata and field layout (no arrays are decompressed).

    The metadata is checked for consistency with the zip directory (every field
    has a member, nothing else is there, the declared arrays fit the file), but
    the members' own headers are only checked when they are read. Fields stored
    as codec streams are listed in ``header.encodings`` (their entries checked:
    known codec, parameters in range, shapes bounded by the members' sizes);
    nothing is decoded, so this needs no PyAV.
    """
    path = Path(path)
    with _open_npz(path) as (zf, size):
        return _header_from_npz(zf, path, size)


def _no_such_field(header: EpisodeHeader, name: str) -> SchemaError:
    return SchemaError(
        f"no such field; the episode has {sorted(header.fields)}", path=header.path, field=name
    )


def read_episode(path: str | os.PathLike[str], fields: Sequence[str] | None = None) -> Episode:
    """Read an episode: metadata plus the arrays of ``fields`` (all when ``None``).

    Only the requested members are decompressed. Every array is checked against
    the metadata (dtype, per-step shape, number of steps) from its ``.npy``
    header, before its data is read; memory use is the size of the arrays read.
    Fields stored as codec streams (``header.encodings``) are decoded: they come
    back with the same dtype and shape as unencoded ones. Decoding needs PyAV;
    without it a one-line ``ImportError`` names the file and the extra.
    """
    path = Path(path)
    with _open_npz(path) as (zf, size):
        header = _header_from_npz(zf, path, size)
        names = list(header.fields) if fields is None else list(fields)
        arrays: dict[str, np.ndarray] = {}
        for name in names:
            if name not in header.fields:
                raise _no_such_field(header, name)
            arrays[name] = _load_member(zf, name, path, size, _expected(header, name))
            enc = header.encodings.get(name)
            if enc is not None:
                arrays[name] = decode_field(arrays[name], enc, path, name)
    return Episode(header, arrays)


def read_frames(
    path: str | os.PathLike[str],
    field: str,
    start: int = 0,
    stop: int | None = None,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Steps ``start:stop`` of one field (``stop=None``: to the end), e.g. camera frames.

    Random access without reading the rest of the file: for a field stored as a
    codec stream only its stream is read (for a ``lossless`` stream, only the
    keyframe groups that hold the range), and decoding starts at the nearest
    keyframe at or before ``start`` (at most ``gop - 1`` frames are decoded in
    vain); any other field's member alone is inflated, keeping only the rows
    asked for (and its CRC-32 is still verified). Requires
    ``0 <= start <= stop <= T`` (``IndexError`` otherwise); the result has the
    dtype and per-step shape of ``read_episode(path).arrays[field]``. With
    ``out`` (an array of exactly that dtype and shape, C-contiguous and
    writeable) the rows are written into it and it is returned: a loader
    decodes straight into its cache that way.

    Where a stream lies in a file is remembered per file version
    (:mod:`teamvla_schema.stream_places`), so reading the same file again
    skips parsing its directory and metadata.
    """
    path = Path(path)
    with _opened(path) as (fh, st):
        known = _STREAM_PLACES.get(st, field)
        if known is not None:
            header, (offset, size) = known
            place = FileRange(fh.fileno(), offset, size)
            return _decode_steps(header, field, place, start, stop, out, path)
        with _zip_of(fh, path) as zf:
            header = _header_from_npz(zf, path, st.st_size)
            if field not in header.fields:
                raise _no_such_field(header, field)
            enc = header.encodings.get(field)
            if enc is None:
                first, last = _step_range(header, field, start, stop, path)
                return _into(out, _load_rows(zf, field, header, first, last), path, field, first)
            expected = _expected(header, field)
            if reads_ranges(enc, path, field):
                stream = _stored_stream(zf, field, path, st.st_size, expected)
                if stream is not None:
                    _STREAM_PLACES.put(st, field, header, (stream.offset, stream.size))
                    return _decode_steps(header, field, stream, start, stop, out, path)
            data = _load_member(zf, field, path, st.st_size, expected)
            return _decode_steps(header, field, data, start, stop, out, path)


_STREAM_PLACES = StreamPlaces()


def _step_range(
    header: EpisodeHeader, field: str, start: Any, stop: Any, path: Path
) -> tuple[int, int]:
    num_steps = header.meta.num_steps
    stop = num_steps if stop is None else stop
    if not (_is_int(start) and _is_int(stop) and 0 <= start <= stop <= num_steps):
        raise IndexError(
            f"{path}: field {field!r}: steps {start!r}:{stop!r} are outside 0:{num_steps}"
        )
    return int(start), int(stop)


def _decode_steps(
    header: EpisodeHeader,
    field: str,
    data: np.ndarray | FileRange,
    start: Any,
    stop: Any,
    out: np.ndarray | None,
    path: Path,
) -> np.ndarray:
    """Steps ``start:stop`` of the encoded ``field`` decoded from its stream ``data``."""
    first, last = _step_range(header, field, start, stop, path)
    enc = header.encodings[field]
    if out is not None:
        _check_out(out, np.dtype(np.uint8), (last - first, *enc.shape[1:]), path, field, first)
    if first == last:
        return _into(out, np.empty((0, *enc.shape[1:]), np.uint8), path, field, first)
    return decode_field_range(data, enc, first, last, path, field, out=out)


def _check_out(
    out: np.ndarray,
    dtype: np.dtype,
    shape: tuple[int, ...],
    path: Path,
    field: str,
    step: int,
) -> None:
    """``out`` must be a writeable C-contiguous array of the rows' dtype and shape.

    A wrong kind of ``out`` is the caller's error (``ValueError``); a dtype or
    shape other than the file holds is reported as a :class:`SchemaError`
    naming the file, field and first step, as a reader expecting other frames
    would want to see it.
    """
    if not isinstance(out, np.ndarray) or not out.flags.writeable or not out.flags.c_contiguous:
        raise ValueError(f"out must be a writeable C-contiguous numpy array, got {type(out)}")
    if out.dtype != dtype or out.shape != shape:
        raise SchemaError(
            f"expected {out.dtype}{list(out.shape)} (the out array), the file holds "
            f"{dtype}{list(shape)} for these steps",
            path=path,
            field=field,
            step=step,
        )


def _into(
    out: np.ndarray | None, rows: np.ndarray, path: Path, field: str, step: int
) -> np.ndarray:
    """``rows``, or ``out`` holding a copy of them (see :func:`_check_out`)."""
    if out is None:
        return rows
    _check_out(out, rows.dtype, rows.shape, path, field, step)
    out[...] = rows
    return out


_LOCAL_HEADER = struct.Struct("<4s5H3L2H")


def _stored_stream(
    zf: zipfile.ZipFile,
    name: str,
    path: Path,
    file_size: int,
    expected: tuple[str, tuple[int, ...]],
) -> FileRange | None:
    """Where a stored (not deflated) stream member's bytes lie in the open file, or ``None``.

    The member's ``.npy`` header is checked as for any read (:func:`_member_data`);
    the stream is then read on demand, so a frame range reads only the parts
    that hold it. Those parts carry their own CRC-32s, checked by the codec
    (the zip entry's CRC-32 covers the whole member and is checked by
    :func:`validate_episode_file`).
    """
    info = zf.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED or zf.fp is None:
        return None
    with _member_data(zf, name, path, file_size, expected) as (fh, shape, dtype, _):
        npy_header = fh.tell()
    fd = zf.fp.fileno()
    local = os.pread(fd, _LOCAL_HEADER.size, info.header_offset)
    if len(local) != _LOCAL_HEADER.size or local[:4] != b"PK\x03\x04":
        raise SchemaError("corrupt zip local header", path=path, field=name)
    *_, name_len, extra_len = _LOCAL_HEADER.unpack(local)
    start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len + npy_header
    nbytes = math.prod(shape) * dtype.itemsize
    if start + nbytes > file_size:
        raise SchemaError(
            f"member data ends past the end of the file ({start + nbytes} > {file_size} bytes)",
            path=path,
            field=name,
        )
    return FileRange(fd, start, nbytes)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _load_rows(
    zf: zipfile.ZipFile, name: str, header: EpisodeHeader, start: int, stop: int
) -> np.ndarray:
    """Rows ``start:stop`` of a plain member, inflated in pieces; only those rows are kept."""
    path = header.path
    with _member_data(zf, name, path, header.file_size, _expected(header, name)) as (
        fh,
        shape,
        dtype,
        fortran,
    ):
        row = math.prod(shape[1:]) * dtype.itemsize
        out = np.empty((stop - start, *shape[1:]), dtype)
        try:
            if fortran:  # rows are not contiguous in Fortran order (other writers): read it whole
                whole = np.empty(shape[::-1], dtype)
                _read_exactly(fh, whole.reshape(-1).view(np.uint8), path, name)
                return np.ascontiguousarray(whole.T[start:stop])
            _skip(fh, start * row, path, name)
            _read_exactly(fh, out.reshape(-1).view(np.uint8), path, name, to_end=False)
            # Inflating the rest (not kept) makes zipfile verify the member's CRC-32.
            _skip(fh, (shape[0] - stop) * row, path, name)
            if fh.read(1):
                raise SchemaError("unexpected bytes after the array data", path=path, field=name)
        except SchemaError:
            raise
        except (NotImplementedError, RuntimeError, *_CORRUPT) as exc:
            raise SchemaError(
                f"truncated or corrupt member: {exc}", path=path, field=name
            ) from None
    return out


def _skip(fh: IO[bytes], nbytes: int, path: Path, name: str) -> None:
    """Inflate and drop ``nbytes`` of a member, a piece at a time."""
    while nbytes > 0:
        chunk = fh.read(min(_READ_CHUNK, nbytes))
        if not chunk:
            raise SchemaError("truncated member", path=path, field=name)
        nbytes -= len(chunk)


def iter_steps(
    path: str | os.PathLike[str], fields: Sequence[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Iterate over the steps of an episode file."""
    yield from read_episode(path, fields).iter_steps()


def _scan_member(
    zf: zipfile.ZipFile,
    name: str,
    header: EpisodeHeader,
    *,
    finite: bool,
    equals: str | None,
) -> None:
    """Inflate one member in pieces (bounded memory), checking finiteness or equality per element."""
    path, num_steps = header.path, header.meta.num_steps
    with _member_data(zf, name, path, header.file_size, _expected(header, name)) as (
        fh,
        shape,
        dtype,
        fortran,
    ):
        per_step = max(math.prod(shape[1:]), 1)
        total = math.prod(shape)
        first_bad: int | None = None
        bad_value: Any = None
        count = max(1, _VALIDATE_CHUNK // max(dtype.itemsize, 1))
        done = 0
        try:
            while done < total:
                n = min(count, total - done)
                want = n * dtype.itemsize
                chunk = fh.read(want)
                while len(chunk) < want:
                    more = fh.read(want - len(chunk))
                    if not more:
                        raise SchemaError(
                            f"truncated member: {done * dtype.itemsize + len(chunk)} of "
                            f"{total * dtype.itemsize} data bytes",
                            path=path,
                            field=name,
                        )
                    chunk += more
                values = np.frombuffer(chunk, dtype, count=n)
                if finite:
                    ok = np.isfinite(values)
                elif equals is not None:
                    ok = values == equals
                else:
                    ok = None
                if ok is not None and not ok.all():
                    bad = np.flatnonzero(~ok)
                    if fortran:  # the step index varies fastest: look at every bad element
                        steps = (done + bad) % num_steps
                        step = int(steps.min())
                        at = int(bad[int(np.argmin(steps))])
                    else:
                        step, at = (done + int(bad[0])) // per_step, int(bad[0])
                    if first_bad is None or step < first_bad:
                        first_bad, bad_value = step, values[at]
                    if not fortran:
                        break
                done += n
            else:
                # Reading to the end makes zipfile verify the member's CRC-32.
                if fh.read(1):
                    raise SchemaError(
                        "unexpected bytes after the array data", path=path, field=name
                    )
        except SchemaError:
            raise
        except (NotImplementedError, RuntimeError, *_CORRUPT) as exc:
            raise SchemaError(
                f"truncated or corrupt member: {exc}", path=path, field=name
            ) from None
    if first_bad is not None:
        if finite:
            raise SchemaError(
                "expected finite values, received NaN/inf", path=path, field=name, step=first_bad
            )
        raise SchemaError(
            f"expected task {equals!r} (the episode's task), received {str(bad_value)!r}",
            path=path,
            field=name,
            step=first_bad,
        )


def validate_episode_file(path: str | os.PathLike[str]) -> EpisodeHeader:
    """Fully check an episode file: readable, declared layout, schema fields, finite values.

    Inflates every member, in pieces (memory stays bounded whatever the
    episode's size; use :func:`read_episode_meta` for a cheap check), and
    decodes every codec stream a chunk of frames at a time (frame count and
    size, the stream's CRC-32, its parameters against the metadata). Raises
    :class:`SchemaError` naming the file, field and, for non-finite values or a
    wrong ``task``, the first bad step; a stream whose codec needs the missing
    PyAV raises a one-line ``ImportError`` naming the file and the extra.
    """
    from teamvla_schema.fields import _EXTRA_DTYPES, KNOWN_FIELDS, REQUIRED_FIELDS

    path = Path(path)
    with _open_npz(path) as (zf, size):
        header = _header_from_npz(zf, path, size)
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
            expected = (
                "str" if spec.kind == "str" else ("bool" if spec.kind == "bool" else spec.dtype)
            )
            ok = layout.dtype == expected and len(layout.shape) == len(spec.shape)
            for dim, dim_size in zip(spec.shape, layout.shape, strict=False):
                if isinstance(dim, int) and dim != dim_size:
                    ok = False
                elif isinstance(dim, str):
                    if dim in dims and dims[dim][0] != dim_size:
                        ok = False
                    dims.setdefault(dim, (dim_size, name))
            if not ok:
                raise SchemaError(
                    f"expected {spec.describe()} per step, received {layout.dtype}{list(layout.shape)}",
                    path=header.path,
                    field=name,
                )
        for name, layout in header.fields.items():
            if name in KNOWN_FIELDS or layout.dtype == "str":
                continue
            if np.dtype(layout.dtype) not in _EXTRA_DTYPES:
                raise SchemaError(
                    "extra field must hold bool, [u]int8..64, float16/32/64 or str values, "
                    f"received {np.dtype(layout.dtype)}",
                    path=header.path,
                    field=name,
                )
        for name, layout in header.fields.items():
            known = KNOWN_FIELDS.get(name)
            finite = (
                layout.dtype != "str"
                and np.dtype(layout.dtype).kind == "f"
                and not (known is not None and known.allow_nonfinite)
            )
            equals = header.meta.task if name == "task" else None
            enc = header.encodings.get(name)
            if enc is not None:
                # A stream is bounded by the metadata (a few MiB per camera and episode), so it
                # is read whole; its frames are decoded a chunk at a time.
                stream = _load_member(zf, name, path, size, _expected(header, name))
                check_field(stream, enc, path, name)
                continue
            _scan_member(zf, name, header, finite=finite, equals=equals)
    return header
