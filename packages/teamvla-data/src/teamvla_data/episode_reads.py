"""Reading selected episode files, checked against the manifest that selected them.

Whatever reads episode arrays for the dataset goes through here: the column
cache build (every field of every episode, a few episodes ahead in threads) and
the decode cache (a range of image frames of one episode, on demand in a
loader worker). A file must still be the version its manifest record describes
(size, mtime_ns, ctime_ns, inode), before and after it is read, so that no
cache ever holds data of another version than its key says.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
from teamvla_schema import episode as episode_io
from teamvla_schema.episode import Episode
from teamvla_schema.errors import SchemaError

from teamvla_data.column_files import INSTRUCTION_COLUMN
from teamvla_data.index import DATA_FIELDS, Skipped
from teamvla_data.manifest import EpisodeRecord, identity_of

log = logging.getLogger(__name__)

#: Fields whose values must be finite (checked when the columns are built).
FINITE_FIELDS = ("q_a", "q_b", "action_a", "action_b", "grip_a", "grip_b")


def unchanged(rec: EpisodeRecord) -> bool:
    """Whether ``rec``'s file still has the identity its manifest record describes."""
    try:
        return identity_of(os.stat(rec.abs_path)) == rec.identity
    except OSError:
        return False


def _changed(rec: EpisodeRecord) -> SchemaError:
    return SchemaError(
        "file changed after the manifest was read; open the dataset again", path=rec.abs_path
    )


def read_checked(rec: EpisodeRecord, fields: Sequence[str] | None = None) -> Episode:
    """``fields`` (default: every field the dataset uses) of ``rec``, checked against its record."""
    if not unchanged(rec):
        raise _changed(rec)
    ep = episode_io.read_episode(rec.abs_path, fields=list(fields or DATA_FIELDS))
    if (
        ep.meta.num_steps != rec.num_steps
        or (ep.meta.task, ep.meta.episode_id) != (rec.task, rec.episode_id)
        or not unchanged(rec)
    ):
        raise _changed(rec)
    for name in FINITE_FIELDS:
        arr = ep.arrays.get(name)
        if arr is None:
            continue
        finite = np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
        if not finite.all():
            raise SchemaError(
                "expected finite values, received NaN/inf",
                path=rec.abs_path,
                field=name,
                step=int(np.argmin(finite)),
            )
    return ep


def read_frame_range(
    rec: EpisodeRecord,
    fields: Sequence[str],
    start: int,
    stop: int,
    into: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Steps ``start .. stop-1`` of the image ``fields`` of ``rec`` (decoded), checked against its record.

    Uses ``teamvla_schema.episode.read_frames`` where the installed
    teamvla-schema has it (random access into compressed image streams: only
    the frames from the nearest keyframe on are decoded) and otherwise reads
    the whole fields and slices them. ``into`` maps fields to arrays of the
    right shape to decode straight into (e.g. a cache slot), saving a copy.
    """
    if not unchanged(rec):
        raise _changed(rec)
    read_frames: Callable[..., Any] | None = getattr(episode_io, "read_frames", None)
    if read_frames is not None and into is not None:
        out = {
            name: read_frames(rec.abs_path, name, start, stop, out=into[name]) for name in fields
        }
    elif read_frames is not None:
        out = {name: np.asarray(read_frames(rec.abs_path, name, start, stop)) for name in fields}
    else:
        ep = episode_io.read_episode(rec.abs_path, fields=list(fields))
        if ep.meta.num_steps != rec.num_steps:
            raise _changed(rec)
        out = {name: ep.arrays[name][start:stop] for name in fields}
    for name, arr in out.items():
        if len(arr) != stop - start:
            raise SchemaError(
                f"expected frames {start}..{stop - 1}, received {len(arr)} frame(s)",
                path=rec.abs_path,
                field=name,
                step=start,
            )
        dest = None if into is None else into[name]
        if dest is not None and arr is not dest:  # read whole (no read_frames): copy it in
            if arr.dtype != dest.dtype or arr.shape != dest.shape:
                raise SchemaError(
                    f"expected {dest.dtype}{list(dest.shape[1:])} frames, received "
                    f"{arr.dtype}{list(arr.shape[1:])}",
                    path=rec.abs_path,
                    field=name,
                    step=start,
                )
            dest[...] = arr
    if not unchanged(rec):
        raise _changed(rec)
    return out


def iter_episodes(
    records: Sequence[EpisodeRecord], threads: int, fields: Sequence[str] | None = None
) -> Iterator[tuple[EpisodeRecord, Episode | SchemaError]]:
    """Read episodes in order; inflating runs in threads (zlib releases the GIL), a few ahead at most."""

    def read(rec: EpisodeRecord) -> Episode | SchemaError:
        try:
            return read_checked(rec, fields)
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


def fill_columns(
    records: Sequence[EpisodeRecord],
    allocate: Callable[[str, np.dtype, tuple[int, ...]], np.ndarray],
    on_error: Literal["raise", "skip"],
    names: Sequence[str],
) -> tuple[dict[str, np.ndarray], dict[tuple[str, str], int], list[str], list[Skipped], int]:
    """Copy the fields ``names`` (plus instruction ids) of every episode into columns.

    Columns are made by ``allocate(name, dtype, shape)``. Returns (columns,
    first row per (task, episode_id), instruction table, skipped files, rows).
    """
    first = records[0].fields
    num_rows = sum(r.num_steps for r in records)
    arrays = {}
    for name in names:
        lay = first[name]
        arrays[name] = allocate(name, np.dtype(lay.dtype), (num_rows, *lay.shape))
    arrays[INSTRUCTION_COLUMN] = allocate(INSTRUCTION_COLUMN, np.dtype(np.int32), (num_rows,))
    starts: dict[tuple[str, str], int] = {}
    table: dict[str, int] = {}
    skipped: list[Skipped] = []
    row = 0
    threads = max(1, min(4, os.cpu_count() or 1))
    for rec, ep in iter_episodes(records, threads, fields=[*names, "instruction"]):
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
        for name in names:
            arrays[name][row : row + n] = ep.arrays[name]
        ids = np.empty(n, np.int32)
        for i, text in enumerate(ep.arrays["instruction"].tolist()):
            ids[i] = table.setdefault(text, len(table))
        arrays[INSTRUCTION_COLUMN][row : row + n] = ids
        starts[(rec.task, rec.episode_id)] = row
        row += n
    return arrays, starts, list(table), skipped, num_rows
