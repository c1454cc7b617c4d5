"""The column store: every selected episode's fields concatenated into one array per field.

Random access into compressed per-episode ``.npz`` files is slow (every read
inflates a whole member), so the dataset reads from columns instead:

* **cache** (default): one *uncompressed* ``.npy`` file per field under
  ``CACHE_ROOT/columns-<key>/``, memory-mapped read-only. ``key`` hashes the
  episode list with each file's (path, size, mtime_ns, ctime_ns, inode), so any
  change to a selected file gives a new key and a new cache; caches that list a
  file that changed or disappeared are deleted when a new one is built. A cache
  is built in a temporary directory and renamed into place (a reader sees a
  complete cache or none); a file lock (``fcntl``) makes concurrent builders
  wait for the first one, and without locks the first rename wins. Its
  ``meta.json`` records the identity (size, mtime_ns, ctime_ns, inode) of every
  column file and ends with a checksum of its own content; a cache whose
  column files were written, replaced or truncated since, or whose
  ``meta.json`` was edited, is rebuilt (see docs/dataset.md on what this
  cannot detect).
* **in memory** (``use_cache=False``): the same columns decompressed into RAM.

Columns: ``rgb_a``, ``rgb_b`` uint8 [S,H,W,3]; ``q_a``, ``q_b``, ``action_a``,
``action_b`` float32 [S,N]; ``grip_a``, ``grip_b`` float32 [S];
``instruction_id`` int32 [S] indexing the ``instructions`` string table in
``meta.json`` (S = total steps). Episode ``e`` occupies rows
``start[e] .. start[e] + num_steps[e] - 1``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from teamvla_schema.atomic import atomic_write_text, read_regular
from teamvla_schema.episode import Episode, read_episode
from teamvla_schema.errors import SchemaError

from teamvla_data.index import DATA_FIELDS, Skipped
from teamvla_data.manifest import (
    EpisodeRecord,
    FileIdentity,
    bulk_load,
    identity_of,
    verify_checksum,
    with_checksum,
)

try:  # POSIX only; elsewhere concurrent builders race and the first rename wins.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

CACHE_FORMAT = "teamvla-columns"
#: 2: keys include ctime_ns and inode; meta.json records column identities and a checksum.
CACHE_VERSION = 2
META_NAME = "meta.json"
#: Array columns stored, in this order.
ARRAY_COLUMNS = ("rgb_a", "rgb_b", "q_a", "q_b", "action_a", "action_b", "grip_a", "grip_b")
INSTRUCTION_COLUMN = "instruction_id"
#: What each entry of meta.json's "episodes" holds, in order ("root": index into "roots";
#: size .. ino: the file's identity; "start": first row, or null for a skipped episode).
EPISODE_ENTRY = (
    *("root", "path", "size", "mtime_ns", "ctime_ns", "ino"),
    *("task", "episode_id", "num_steps", "start"),
)
#: Rows at least this large (images) are read with preadv rather than through the memory map.
PREAD_MIN_ROW_BYTES = 4096


def cache_key(records: Sequence[EpisodeRecord]) -> str:
    """Content key of a cache over ``records`` (in order): their files' identity plus the layout version."""
    h = hashlib.sha256(f"{CACHE_FORMAT}:{CACHE_VERSION}:{','.join(ARRAY_COLUMNS)}\n".encode())
    h.update(
        "".join(
            f"{r.root}\x1f{r.path}\x1f{r.size}\x1f{r.mtime_ns}\x1f{r.ctime_ns}\x1f{r.ino}\n"
            for r in records
        ).encode()
    )
    return h.hexdigest()


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

    def column(self, name: str) -> np.ndarray:
        """The column ``name`` (opened on first use in each process)."""
        if self._arrays is None:
            assert self.path is not None
            arrays = {}
            for col in (*ARRAY_COLUMNS, INSTRUCTION_COLUMN):
                path = self.path / f"{col}.npy"
                self._check_identity(col, os.stat(path))
                mm = np.load(path, mmap_mode="r", allow_pickle=False)
                # A plain ndarray view of the mapping: fancy indexing then yields plain arrays.
                arrays[col] = mm.view(np.ndarray)
            self._arrays = arrays
        return self._arrays[name]

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
            offset = _npy_layout(path)[2]
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
        return sum(int(self.column(c).nbytes) for c in (*ARRAY_COLUMNS, INSTRUCTION_COLUMN))


# --------------------------------------------------------------------------- reading episodes


def _unchanged(rec: EpisodeRecord) -> bool:
    try:
        return identity_of(os.stat(rec.abs_path)) == rec.identity
    except OSError:
        return False


def _read_checked(rec: EpisodeRecord) -> Episode:
    # The file must be the version the manifest describes, before and after reading it: the
    # cache is keyed by that identity, so it must hold exactly that version's data.
    changed = SchemaError(
        "file changed after the manifest was read; open the dataset again", path=rec.abs_path
    )
    if not _unchanged(rec):
        raise changed
    ep = read_episode(rec.abs_path, fields=list(DATA_FIELDS))
    if (
        ep.meta.num_steps != rec.num_steps
        or (ep.meta.task, ep.meta.episode_id) != (rec.task, rec.episode_id)
        or not _unchanged(rec)
    ):
        raise changed
    for name in ("q_a", "q_b", "action_a", "action_b", "grip_a", "grip_b"):
        arr = ep.arrays[name]
        finite = np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
        if not finite.all():
            raise SchemaError(
                "expected finite values, received NaN/inf",
                path=rec.abs_path,
                field=name,
                step=int(np.argmin(finite)),
            )
    return ep


def _iter_episodes(
    records: Sequence[EpisodeRecord], threads: int
) -> Iterator[tuple[EpisodeRecord, Episode | SchemaError]]:
    """Read episodes in order; inflating runs in threads (zlib releases the GIL), a few ahead at most."""

    def read(rec: EpisodeRecord) -> Episode | SchemaError:
        try:
            return _read_checked(rec)
        except SchemaError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: deque[tuple[EpisodeRecord, Future[Episode | SchemaError]]] = deque()
        it = iter(records)
        for rec in it:
            pending.append((rec, pool.submit(read, rec)))
            if len(pending) >= 2 * threads:
                break
        while pending:
            rec, fut = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(read, nxt)))
            yield rec, fut.result()


def _fill(
    records: Sequence[EpisodeRecord],
    allocate: Any,
    on_error: Literal["raise", "skip"],
) -> tuple[dict[str, np.ndarray], dict[tuple[str, str], int], list[str], list[Skipped], int]:
    """Copy every episode into columns made by ``allocate(name, dtype, shape)``."""
    first = records[0].fields
    num_rows = sum(r.num_steps for r in records)
    arrays = {}
    for name in ARRAY_COLUMNS:
        lay = first[name]
        arrays[name] = allocate(name, np.dtype(lay.dtype), (num_rows, *lay.shape))
    arrays[INSTRUCTION_COLUMN] = allocate(INSTRUCTION_COLUMN, np.dtype(np.int32), (num_rows,))
    starts: dict[tuple[str, str], int] = {}
    table: dict[str, int] = {}
    skipped: list[Skipped] = []
    row = 0
    threads = max(1, min(4, os.cpu_count() or 1))
    for rec, ep in _iter_episodes(records, threads):
        n = rec.num_steps
        if isinstance(ep, SchemaError):
            if on_error == "raise":
                raise SchemaError(
                    f"{ep.reason} (pass on_error='skip' to leave such files out)",
                    path=rec.abs_path,
                    field=ep.field,
                    step=ep.step,
                ) from None
            log.warning("skipping %s: %s", rec.abs_path, ep.reason)
            skipped.append(Skipped(str(rec.abs_path), str(ep).removeprefix(f"{rec.abs_path}: ")))
            row += n  # the rows stay allocated but unused
            continue
        for name in ARRAY_COLUMNS:
            arrays[name][row : row + n] = ep.arrays[name]
        ids = np.empty(n, np.int32)
        for i, text in enumerate(ep.arrays["instruction"].tolist()):
            ids[i] = table.setdefault(text, len(table))
        arrays[INSTRUCTION_COLUMN][row : row + n] = ids
        starts[(rec.task, rec.episode_id)] = row
        row += n
    return arrays, starts, list(table), skipped, num_rows


def load_in_memory(
    records: Sequence[EpisodeRecord], on_error: Literal["raise", "skip"] = "raise"
) -> ColumnStore:
    """Decompress ``records`` into RAM columns."""
    if not records:
        raise SchemaError("no episodes selected")
    arrays, starts, instructions, skipped, num_rows = _fill(
        records, lambda name, dtype, shape: np.empty(shape, dtype), on_error
    )
    return ColumnStore(
        cache_key(records), starts, instructions, num_rows, skipped, path=None, _arrays=arrays
    )


# --------------------------------------------------------------------------- the on-disk cache


def _meta_doc(
    records: Sequence[EpisodeRecord],
    key: str,
    starts: dict[tuple[str, str], int],
    instructions: list[str],
    skipped: list[Skipped],
    num_rows: int,
    spec: Any,
) -> dict[str, Any]:
    roots: dict[str, int] = {}
    for r in records:
        roots.setdefault(str(r.root), len(roots))
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "key": key,
        "spec": spec,
        "num_rows": num_rows,
        "instructions": instructions,
        "roots": list(roots),
        # One list per episode (compact and quick to parse): see EPISODE_ENTRY.
        "episodes": [
            [
                roots[str(r.root)],
                r.path,
                *r.identity,
                r.task,
                r.episode_id,
                r.num_steps,
                starts.get((r.task, r.episode_id)),
            ]
            for r in records
        ],
        "skipped": [{"path": s.path, "reason": s.reason} for s in skipped],
    }


def _npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) from an .npy header."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        return shape, dtype, fh.tell()


def _columns_intact(directory: Path, num_rows: int) -> bool:
    """Every column file exists with ``num_rows`` rows and its full size (cheap: headers and stat)."""
    for name in (*ARRAY_COLUMNS, INSTRUCTION_COLUMN):
        path = directory / f"{name}.npy"
        try:
            shape, dtype, offset = _npy_layout(path)
            size = path.stat().st_size
        except (OSError, ValueError):
            return False
        if (
            not shape
            or shape[0] != num_rows
            or size != offset + int(np.prod(shape)) * dtype.itemsize
        ):
            log.warning("cache column %s is damaged; rebuilding the cache", path)
            return False
    return True


def _read_meta(directory: Path) -> dict[str, Any] | None:
    """A cache's meta.json if it is a regular file holding intact JSON with a valid checksum."""
    path = directory / META_NAME
    try:
        data = read_regular(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read %s (%s); rebuilding the cache", path, exc)
        return None
    if not verify_checksum(data):
        log.warning("%s was edited or damaged (checksum); rebuilding the cache", path)
        return None
    try:
        with bulk_load():
            doc = json.loads(data)
    except (ValueError, RecursionError):  # pragma: no cover - the checksum matched
        return None
    return doc if isinstance(doc, dict) else None


def _identities_intact(directory: Path, recorded: Any) -> bool:
    """Every column file still has the identity recorded when the cache was built."""
    for name in (*ARRAY_COLUMNS, INSTRUCTION_COLUMN):
        path = directory / f"{name}.npy"
        try:
            now = identity_of(os.stat(path))
        except OSError:
            log.warning("cache column %s is missing; rebuilding the cache", path)
            return False
        if list(now) != recorded[name]:
            log.warning(
                "cache column %s was written or replaced after the cache was built; "
                "rebuilding the cache",
                path,
            )
            return False
    return True


def _open_cache(directory: Path, key: str) -> ColumnStore | None:
    doc = _read_meta(directory)
    if doc is None:
        return None
    try:
        if (
            doc.get("format") != CACHE_FORMAT
            or doc.get("version") != CACHE_VERSION
            or doc.get("key") != key
            or not _identities_intact(directory, doc["columns"])
            or not _columns_intact(directory, int(doc["num_rows"]))
        ):
            return None
        starts = {(e[6], e[7]): int(e[9]) for e in doc["episodes"] if e[9] is not None}
        skipped = [Skipped(s["path"], s["reason"]) for s in doc["skipped"]]
        identities: dict[str, FileIdentity] = {
            name: tuple(doc["columns"][name]) for name in (*ARRAY_COLUMNS, INSTRUCTION_COLUMN)
        }
        return ColumnStore(
            key,
            starts,
            list(doc["instructions"]),
            int(doc["num_rows"]),
            skipped,
            directory,
            identities=identities,
        )
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        log.warning("malformed cache metadata in %s (%s); rebuilding the cache", directory, exc)
        return None


@contextlib.contextmanager
def _build_lock(cache_root: Path) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(cache_root / ".build.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


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


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_dir(directory: Path) -> None:
    # Rename first so that no reader ever sees a half-deleted cache; open memory maps stay valid.
    trash = directory.with_name(f".trash-{directory.name}-{secrets.token_hex(4)}")
    try:
        os.rename(directory, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def prune_stale(
    cache_root: Path,
    current: dict[tuple[str, str], FileIdentity],
    roots: Sequence[Path],
    keep: str,
    spec: Any = None,
) -> list[Path]:
    """Delete superseded caches; return what was removed.

    A cache is superseded when it lists a file of ``roots`` that changed or
    vanished (``current`` maps (root, relative path) -> (size, mtime_ns,
    ctime_ns, inode) for every file now in ``roots``), when it was built for the
    same selection ``spec`` as the cache ``keep`` (so the roots gained files
    since), or when it has an older cache layout and lists files of ``roots``.
    """
    root_names = {str(r) for r in roots}
    removed = []
    for directory in sorted(cache_root.glob("columns-*")):
        if directory.name == f"columns-{keep[:24]}":
            continue
        try:
            doc = json.loads(read_regular(directory / META_NAME))
            entries: list[tuple[Any, Any, tuple[Any, ...] | None]]
            if doc.get("version") == CACHE_VERSION:
                names = doc["roots"]
                entries = [(names[e[0]], e[1], tuple(e[2:6])) for e in doc["episodes"]]
            else:  # an older layout: only which roots it lists matters
                entries = [(e.get("root"), e.get("path"), None) for e in doc["episodes"]]
            ours = any(root in root_names for root, _, _ in entries)
        except (
            OSError,
            ValueError,
            KeyError,
            TypeError,
            IndexError,
            AttributeError,
            RecursionError,
        ):
            continue  # not ours to judge
        if doc.get("format") == CACHE_FORMAT and doc.get("version") != CACHE_VERSION and ours:
            _remove_dir(directory)
            removed.append(directory)
            log.info("removed cache %s of an older layout", directory)
            continue
        if spec is not None and doc.get("spec") == spec:
            _remove_dir(directory)
            removed.append(directory)
            log.info("removed superseded cache %s (same selection, files were added)", directory)
            continue
        for root, path, identity in entries:
            if root in root_names and current.get((root, path)) != identity:
                _remove_dir(directory)
                removed.append(directory)
                log.info("removed stale cache %s (%s changed or was removed)", directory, path)
                break
    return removed


def open_or_build_cache(
    records: Sequence[EpisodeRecord],
    cache_root: str | os.PathLike[str],
    *,
    on_error: Literal["raise", "skip"] = "raise",
    spec: Any = None,
) -> ColumnStore:
    """Open the cache of ``records`` under ``cache_root``, building it first if needed.

    ``spec`` (JSON-able) describes the selection the records came from; it is
    stored so that :func:`prune_stale` can tell when a newer cache supersedes this one.
    """
    if not records:
        raise SchemaError("no episodes selected")
    cache_root = Path(cache_root)
    key = cache_key(records)
    final = cache_root / f"columns-{key[:24]}"
    store = _open_cache(final, key)
    if store is not None:
        return store
    cache_root.mkdir(parents=True, exist_ok=True)
    with _build_lock(cache_root):
        store = _open_cache(final, key)  # built by another process while we waited
        if store is not None:
            return store
        if final.exists():  # left-over of an older layout or a crash: replace it
            _remove_dir(final)
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

            arrays, starts, instructions, skipped, num_rows = _fill(records, allocate, on_error)
            for name, arr in arrays.items():
                arr.flush()  # type: ignore[attr-defined]
                del arr
                _fsync(tmp / f"{name}.npy")
            arrays.clear()  # unmapped: nothing writes to the columns any more
            doc = _meta_doc(records, key, starts, instructions, skipped, num_rows, spec)
            doc["columns"] = {
                name: list(identity_of(os.stat(tmp / f"{name}.npy")))
                for name in (*ARRAY_COLUMNS, INSTRUCTION_COLUMN)
            }
            atomic_write_text(
                tmp / META_NAME, with_checksum(json.dumps(doc, separators=(",", ":")))
            )
            _fsync(tmp)
            try:
                os.rename(tmp, final)
            except OSError:
                # Someone else (without the lock) published first: theirs is equally good.
                if _open_cache(final, key) is None:
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        _fsync(cache_root)
        log.info(
            "built cache %s: %d episodes, %d rows in %.1f s",
            final,
            len(records),
            num_rows,
            time.perf_counter() - t0,
        )
    store = _open_cache(final, key)
    if store is None:  # pragma: no cover - only if someone deletes it under us
        raise SchemaError("cache vanished right after it was built", path=final)
    store.built = True
    return store
