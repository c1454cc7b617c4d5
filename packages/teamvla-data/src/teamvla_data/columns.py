"""The column store: every selected episode's fields concatenated into one array per field.

Random access into compressed per-episode ``.npz`` files is slow (every read
inflates a whole member), so the dataset reads from columns instead:

* **cache** (default): one *uncompressed* ``.npy`` file per field under
  ``CACHE_ROOT/columns-<key>/``, memory-mapped read-only (layout, keys,
  integrity checks and pruning: :mod:`teamvla_data.column_files`). A cache is
  built in a temporary directory and renamed into place (a reader sees a
  complete cache or none); a file lock (``fcntl``) makes concurrent builders
  wait for the first one, and without locks the first rename wins. A cache
  whose column files were written, replaced or truncated since, or whose
  ``meta.json`` was edited, is rebuilt (see docs/dataset.md on what this
  cannot detect).
* **in memory** (``use_cache=False``): the same columns decompressed into RAM.

Columns: ``rgb_a``, ``rgb_b`` uint8 [S,H,W,3]; ``q_a``, ``q_b``, ``action_a``,
``action_b`` float32 [S,N]; ``grip_a``, ``grip_b`` float32 [S];
``instruction_id`` int32 [S] indexing the ``instructions`` string table in
``meta.json`` (S = total steps). Episode ``e`` occupies rows
``start[e] .. start[e] + num_steps[e] - 1``. A store built with
``names=LOWDIM_COLUMNS`` leaves the images out (they are then decoded on
demand, see :mod:`teamvla_data.image_chunks`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from teamvla_schema.atomic import atomic_write_text, fsync_path
from teamvla_schema.errors import SchemaError

from teamvla_data.column_files import (
    ARRAY_COLUMNS,
    IMAGE_COLUMNS,
    INSTRUCTION_COLUMN,
    LOWDIM_COLUMNS,
    build_lock,
    cache_key,
    meta_doc,
    npy_layout,
    prune_stale,
    read_cache_meta,
    remove_dir,
)
from teamvla_data.episode_reads import fill_columns
from teamvla_data.index import EpisodeIndex, Skipped
from teamvla_data.manifest import EpisodeRecord, FileIdentity, identity_of, with_checksum

log = logging.getLogger(__name__)

#: Rows at least this large (images) are read with preadv rather than through the memory map.
PREAD_MIN_ROW_BYTES = 4096

__all__ = [
    "ARRAY_COLUMNS",
    "IMAGE_COLUMNS",
    "INSTRUCTION_COLUMN",
    "LOWDIM_COLUMNS",
    "ColumnStore",
    "cache_key",
    "load_in_memory",
    "open_dataset_cache",
    "open_or_build_cache",
    "prune_stale",
]


@dataclass
class ColumnStore:
    """Columns of a list of episodes, from a memory-mapped cache or RAM."""

    key: str
    starts: dict[tuple[str, str], int]  # (task, episode_id) -> first row
    instructions: list[str]
    num_rows: int
    skipped: list[Skipped] = field(default_factory=list)
    path: Path | None = None  # cache directory; None when in memory
    built: bool = False  # whether this process built it (just now)
    _arrays: dict[str, np.ndarray] | None = field(default=None, repr=False)
    _files: dict[str, tuple[int, int]] | None = field(
        default=None, repr=False
    )  # name -> (fd, data offset)
    # Column file -> identity recorded when the cache was built (checked whenever one is opened).
    identities: dict[str, FileIdentity] = field(default_factory=dict, repr=False)
    #: The array columns held (the images are left out when they are decoded on demand).
    names: tuple[str, ...] = ARRAY_COLUMNS

    def column(self, name: str) -> np.ndarray:
        """The column ``name`` (opened on first use in each process)."""
        if self._arrays is None:
            assert self.path is not None
            arrays = {}
            for col in (*self.names, INSTRUCTION_COLUMN):
                path = self.path / f"{col}.npy"
                self._check_identity(col, os.stat(path))
                mm = np.load(path, mmap_mode="r", allow_pickle=False)
                # A plain ndarray view of the mapping: fancy indexing then yields plain arrays.
                arrays[col] = mm.view(np.ndarray)
            self._arrays = arrays
        try:
            return self._arrays[name]
        except KeyError:
            raise SchemaError(
                f"the column store holds no {name!r} (it holds {list(self.names)})"
            ) from None

    def _check_identity(self, name: str, st: os.stat_result) -> None:
        # A column written or replaced after the dataset was opened (say, between opening it
        # and a new worker's first read) is refused rather than read.
        want = self.identities.get(name)
        if want is not None and identity_of(st) != want:
            assert self.path is not None
            raise SchemaError(
                "cache file changed after the dataset was opened; open the dataset again "
                "(it will rebuild the cache)",
                path=self.path / f"{name}.npy",
            )

    def take(self, name: str, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``column(name)[rows]`` for an integer array ``rows`` of any shape (into ``out`` if given).

        Large rows (images) of an on-disk cache are read with ``preadv``, one
        call per run of consecutive rows (a sample's history frames are one
        run), issued in ascending file order for locality, each straight into
        its place in the result: no intermediate copy, and a freshly started
        worker pays no page faults for mapping the cache first. Small rows are
        fancy-indexed from the memory map (so is everything where ``os.preadv``
        does not exist).
        """
        col = self.column(name)
        row_bytes = col[0].nbytes if len(col) else 0
        if self.path is None or row_bytes < PREAD_MIN_ROW_BYTES or not hasattr(os, "preadv"):
            if out is None:
                return col[rows]
            np.take(col, rows, axis=0, out=out)
            return out
        fd, offset = self._file(name)
        flat_rows = np.asarray(rows, np.int64).reshape(-1)
        if out is None:
            out = np.empty((*np.shape(rows), *col.shape[1:]), col.dtype)
        dest = out.reshape(len(flat_rows), -1).view(np.uint8)
        n = len(flat_rows)
        if n == 0:
            return out
        new_run = np.ones(n, bool)
        new_run[1:] = flat_rows[1:] != flat_rows[:-1] + 1
        starts = np.flatnonzero(new_run)
        ends = np.append(starts[1:], n)
        order = np.argsort(flat_rows[starts], kind="stable")
        for a, b in zip(starts[order].tolist(), ends[order].tolist(), strict=True):
            got = os.preadv(fd, [dest[a:b].data], offset + int(flat_rows[a]) * row_bytes)
            if got != (b - a) * row_bytes:
                raise SchemaError(
                    f"cache file is truncated (read {got} of {(b - a) * row_bytes} bytes)",
                    path=self.path / f"{name}.npy",
                )
        return out

    def _file(self, name: str) -> tuple[int, int]:
        # A descriptor stays valid in forked workers (preadv has no shared file position).
        if self._files is None:
            self._files = {}
        if name not in self._files:
            assert self.path is not None
            path = self.path / f"{name}.npy"
            offset = npy_layout(path)[2]
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                self._check_identity(name, os.fstat(fd))
            except BaseException:
                os.close(fd)
                raise
            self._files[name] = (fd, offset)
        return self._files[name]

    def __del__(self) -> None:
        for fd, _ in (self._files or {}).values():
            with contextlib.suppress(OSError):
                os.close(fd)

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps and files are reopened in the receiving process (e.g. spawned workers), never copied.
        state = dict(self.__dict__)
        if self.path is not None:
            state["_arrays"] = None
        state["_files"] = None
        return state

    @property
    def nbytes(self) -> int:
        """Total size of the columns in bytes."""
        return sum(int(self.column(c).nbytes) for c in (*self.names, INSTRUCTION_COLUMN))


def load_in_memory(
    records: list[EpisodeRecord],
    on_error: Literal["raise", "skip"] = "raise",
    names: tuple[str, ...] = ARRAY_COLUMNS,
) -> ColumnStore:
    """Decompress the columns ``names`` of ``records`` into RAM."""
    if not records:
        raise SchemaError("no episodes selected")
    arrays, starts, instructions, skipped, num_rows = fill_columns(
        records, lambda name, dtype, shape: np.empty(shape, dtype), on_error, names
    )
    return ColumnStore(
        cache_key(records, names),
        starts,
        instructions,
        num_rows,
        skipped,
        path=None,
        _arrays=arrays,
        names=names,
    )


# --------------------------------------------------------------------------- the on-disk cache


def _open_cache(directory: Path, key: str, names: tuple[str, ...]) -> ColumnStore | None:
    meta = read_cache_meta(directory, key, (*names, INSTRUCTION_COLUMN))
    if meta is None:
        return None
    return ColumnStore(
        key,
        meta.starts,
        meta.instructions,
        meta.num_rows,
        meta.skipped,
        directory,
        identities=meta.identities,
        names=names,
    )


def _preallocate(path: Path, size: int) -> None:
    """Allocate ``size`` bytes of disk for ``path`` (ENOSPC now rather than SIGBUS later)."""
    if not hasattr(os, "posix_fallocate") or size <= 0:  # pragma: no cover - macOS, Windows
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return  # the file system cannot preallocate; the memory map is all there is
        raise
    finally:
        os.close(fd)


def open_or_build_cache(
    records: list[EpisodeRecord],
    cache_root: str | os.PathLike[str],
    *,
    on_error: Literal["raise", "skip"] = "raise",
    spec: Any = None,
    names: tuple[str, ...] = ARRAY_COLUMNS,
) -> ColumnStore:
    """Open the cache of the columns ``names`` of ``records`` under ``cache_root``, building it if needed.

    ``spec`` (JSON-able) describes the selection the records came from; it is
    stored so that :func:`prune_stale` can tell when a newer cache supersedes this one.
    """
    if not records:
        raise SchemaError("no episodes selected")
    cache_root = Path(cache_root)
    key = cache_key(records, names)
    final = cache_root / f"columns-{key[:24]}"
    store = _open_cache(final, key, names)
    if store is not None:
        return store
    cache_root.mkdir(parents=True, exist_ok=True)
    with build_lock(cache_root):
        store = _open_cache(final, key, names)  # built by another process while we waited
        if store is not None:
            return store
        if final.exists():  # left-over of an older layout or a crash: replace it
            remove_dir(final)
        tmp = cache_root / f".tmp-columns-{key[:24]}-{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
        t0 = time.perf_counter()
        try:

            def allocate(name: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
                path = tmp / f"{name}.npy"
                arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
                # Reserve the blocks now: on a full disk, writing through the memory map
                # would kill the process with SIGBUS instead of raising an error.
                _preallocate(path, arr.offset + arr.nbytes)
                return arr

            arrays, starts, instructions, skipped, num_rows = fill_columns(
                records, allocate, on_error, names
            )
            for name, arr in arrays.items():
                arr.flush()  # type: ignore[attr-defined]
                del arr
                fsync_path(tmp / f"{name}.npy")
            arrays.clear()  # unmapped: nothing writes to the columns any more
            doc = meta_doc(records, key, starts, instructions, skipped, num_rows, spec)
            doc["columns"] = {
                name: list(identity_of(os.stat(tmp / f"{name}.npy")))
                for name in (*names, INSTRUCTION_COLUMN)
            }
            atomic_write_text(
                tmp / "meta.json", with_checksum(json.dumps(doc, separators=(",", ":")))
            )
            fsync_path(tmp)
            try:
                os.rename(tmp, final)
            except OSError:
                # Someone else (without the lock) published first: theirs is equally good.
                if _open_cache(final, key, names) is None:
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        fsync_path(cache_root)
        log.info(
            "built cache %s: %d episodes, %d rows in %.1f s",
            final,
            len(records),
            num_rows,
            time.perf_counter() - t0,
        )
    store = _open_cache(final, key, names)
    if store is None:  # pragma: no cover - only if someone deletes it under us
        raise SchemaError("cache vanished right after it was built", path=final)
    store.built = True
    return store


def open_dataset_cache(
    index: EpisodeIndex,
    selected: list[EpisodeRecord],
    cache_root: Path,
    spec: dict[str, Any],
    on_error: Literal["raise", "skip"],
    names: tuple[str, ...],
) -> ColumnStore:
    """:func:`open_or_build_cache` for a dataset: a clear error when it cannot be built, and a
    newly built cache prunes the ones it supersedes among ``index``'s roots."""
    try:
        store = open_or_build_cache(selected, cache_root, on_error=on_error, spec=spec, names=names)
    except OSError as exc:
        raise SchemaError(
            f"cannot build the column cache ({exc.strerror}); pass cache_dir "
            "(dataset.cache_dir) to put it elsewhere, or use_cache=False to decompress into memory",
            path=cache_root,
        ) from None
    if store.built:  # a new cache may supersede older ones
        current = {(str(r.root), r.path): r.identity for r in (*index.records, *index.bad)}
        prune_stale(cache_root, current, index.roots, keep=store.key, spec=spec)
    return store
