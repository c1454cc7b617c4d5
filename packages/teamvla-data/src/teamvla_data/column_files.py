"""The on-disk layout of a column cache: keys, ``meta.json``, integrity checks, locking, pruning.

A cache directory ``CACHE_ROOT/columns-<key>/`` holds one uncompressed ``.npy``
file per column and a ``meta.json`` that lists the episodes (with their file
identities and first rows), the instruction string table, the selection it was
built for and every column file's own identity, and ends with a checksum of
itself. :mod:`teamvla_data.columns` builds and opens caches with these helpers;
nothing here reads episode files.

``key`` hashes the layout version, the column names and every episode's
(root, path, size, mtime_ns, ctime_ns, inode): a change to any selected file,
or another set of columns, gives another key and another directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from teamvla_schema.atomic import read_regular
from teamvla_schema.npy_header import read_array_header

from teamvla_data.index import Skipped
from teamvla_data.manifest import (
    EpisodeRecord,
    FileIdentity,
    bulk_load,
    identity_of,
    verify_checksum,
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
#: Array columns of a full cache, in this order.
ARRAY_COLUMNS = ("rgb_a", "rgb_b", "q_a", "q_b", "action_a", "action_b", "grip_a", "grip_b")
#: Image columns: left out of the cache when images are decoded on demand (``cache_max_bytes``).
IMAGE_COLUMNS = ("rgb_a", "rgb_b")
#: The small columns, kept whole whatever the image budget.
LOWDIM_COLUMNS = tuple(c for c in ARRAY_COLUMNS if c not in IMAGE_COLUMNS)
INSTRUCTION_COLUMN = "instruction_id"
#: What each entry of meta.json's "episodes" holds, in order ("root": index into "roots";
#: size .. ino: the file's identity; "start": first row, or null for a skipped episode).
EPISODE_ENTRY = (
    *("root", "path", "size", "mtime_ns", "ctime_ns", "ino"),
    *("task", "episode_id", "num_steps", "start"),
)


def cache_key(records: Sequence[EpisodeRecord], columns: Sequence[str] = ARRAY_COLUMNS) -> str:
    """Content key of a cache of ``columns`` over ``records`` (in order): file identities plus layout."""
    h = hashlib.sha256(f"{CACHE_FORMAT}:{CACHE_VERSION}:{','.join(columns)}\n".encode())
    h.update(
        "".join(
            f"{r.root}\x1f{r.path}\x1f{r.size}\x1f{r.mtime_ns}\x1f{r.ctime_ns}\x1f{r.ino}\n"
            for r in records
        ).encode()
    )
    return h.hexdigest()


def meta_doc(
    records: Sequence[EpisodeRecord],
    key: str,
    starts: dict[tuple[str, str], int],
    instructions: list[str],
    skipped: list[Skipped],
    num_rows: int,
    spec: Any,
) -> dict[str, Any]:
    """The JSON document of ``meta.json`` (without the column identities, added once written)."""
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


def npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) from an .npy header."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        shape, _, dtype = read_array_header(fh, version)
        return shape, dtype, fh.tell()


def _columns_intact(directory: Path, num_rows: int, names: Sequence[str]) -> bool:
    """Every column file exists with ``num_rows`` rows and its full size (cheap: headers and stat)."""
    for name in names:
        path = directory / f"{name}.npy"
        try:
            shape, dtype, offset = npy_layout(path)
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


def _identities_intact(directory: Path, recorded: Any, names: Sequence[str]) -> bool:
    """Every column file still has the identity recorded when the cache was built."""
    for name in names:
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


@dataclass
class CacheMeta:
    """What :func:`read_cache_meta` found in an intact cache directory."""

    starts: dict[tuple[str, str], int]
    instructions: list[str]
    num_rows: int
    skipped: list[Skipped]
    identities: dict[str, FileIdentity]


def read_cache_meta(directory: Path, key: str, names: Sequence[str]) -> CacheMeta | None:
    """The metadata of the intact cache of ``key`` with columns ``names`` in ``directory``, or None.

    None (with a warning when something was found but is unusable) means: build it.
    """
    doc = _read_meta(directory)
    if doc is None:
        return None
    try:
        if (
            doc.get("format") != CACHE_FORMAT
            or doc.get("version") != CACHE_VERSION
            or doc.get("key") != key
            or not _identities_intact(directory, doc["columns"], names)
            or not _columns_intact(directory, int(doc["num_rows"]), names)
        ):
            return None
        return CacheMeta(
            starts={(e[6], e[7]): int(e[9]) for e in doc["episodes"] if e[9] is not None},
            instructions=list(doc["instructions"]),
            num_rows=int(doc["num_rows"]),
            skipped=[Skipped(s["path"], s["reason"]) for s in doc["skipped"]],
            identities={name: tuple(doc["columns"][name]) for name in names},
        )
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        log.warning("malformed cache metadata in %s (%s); rebuilding the cache", directory, exc)
        return None


@contextlib.contextmanager
def build_lock(cache_root: Path) -> Iterator[None]:
    """Hold the ``fcntl`` lock that serialises cache builders under ``cache_root``."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(cache_root / ".build.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def remove_dir(directory: Path) -> None:
    """Delete a cache directory; renamed first so that no reader ever sees it half deleted."""
    # Open memory maps of the old files stay valid after the rename and the deletion.
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
            remove_dir(directory)
            removed.append(directory)
            log.info("removed cache %s of an older layout", directory)
            continue
        if spec is not None and doc.get("spec") == spec:
            remove_dir(directory)
            removed.append(directory)
            log.info("removed superseded cache %s (same selection, files were added)", directory)
            continue
        for root, path, identity in entries:
            if root in root_names and current.get((root, path)) != identity:
                remove_dir(directory)
                removed.append(directory)
                log.info("removed stale cache %s (%s changed or was removed)", directory, path)
                break
    return removed
