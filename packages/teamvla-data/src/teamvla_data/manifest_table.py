"""A root's manifest as memory-mapped columns: open a million episodes without parsing JSON.

``manifest.json`` (:mod:`teamvla_data.manifest`) stays the source of truth, but
parsing it costs about 3 s and 1 GB of Python objects per million episodes.
``ROOT/.teamvla/manifest.table`` holds the same records as numpy columns,
written next to it on first use: opening it maps the file and checks its
checksum, so the time and memory do not grow with Python objects per episode;
:meth:`ManifestTable.records` turns only the rows a process needs (a task, a
rank's shard) into :class:`~teamvla_data.manifest.EpisodeRecord` objects.

File layout: 8 magic bytes, the length of a JSON header (8 bytes, little
endian), the header (format, version, the identity and checksum of the
``manifest.json`` it was made from, task, layout and error tables, every
column's dtype, offset and length, a CRC-32 of the data), then the columns,
each 64-byte aligned. Written atomically; a table whose manifest changed
(another identity), or that is damaged, truncated or of another version, is
rebuilt from the JSON. Nothing is unpickled: columns are plain numeric arrays
and strings are UTF-8 blobs with offsets.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from teamvla_schema.atomic import atomic_write
from teamvla_schema.fields import FieldLayout

from teamvla_data.manifest import (
    EpisodeRecord,
    identity_of,
    load_manifest,
    manifest_path,
    update_manifest,
)

log = logging.getLogger(__name__)

TABLE_NAME = "manifest.table"
TABLE_FORMAT = "teamvla-manifest-table"
TABLE_VERSION = 1
_MAGIC = b"TVMTABLE"
_ALIGN = 64
_CRC_BLOCK = 1 << 22
#: Numeric columns, with their dtypes (``layout`` is -1 and ``error`` >= 0 for unreadable files).
NUMERIC = {
    "size": "<i8",
    "mtime_ns": "<i8",
    "ctime_ns": "<i8",
    "ino": "<u8",
    "num_steps": "<i8",
    "success": "|b1",
    "task": "<i4",
    "layout": "<i4",
    "error": "<i4",
}
#: String columns: a UTF-8 blob ``<name>_blob`` and offsets ``<name>_end`` (end of each string).
STRINGS = ("path", "episode_id")


def table_path(root: str | os.PathLike[str]) -> Path:
    """Where the table of ``root``'s manifest lives."""
    return manifest_path(root).with_name(TABLE_NAME)


def _strings(values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [v.encode("utf-8") for v in values]
    ends = np.cumsum([len(b) for b in encoded], dtype=np.int64)
    return np.frombuffer(b"".join(encoded), np.uint8), ends


def _columns(records: Sequence[EpisodeRecord]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    tasks: dict[str, int] = {}
    errors: dict[str, int] = {}
    layout_docs: list[dict[str, Any]] = []
    by_text: dict[str, int] = {}
    by_object: dict[int, int] = {}  # records of one manifest share each layout's dict
    task_col = np.empty(len(records), "<i4")
    layout_col = np.empty(len(records), "<i4")
    error_col = np.full(len(records), -1, "<i4")
    for i, r in enumerate(records):
        task_col[i] = tasks.setdefault(r.task, len(tasks))
        if r.error is not None:
            layout_col[i] = -1
            error_col[i] = errors.setdefault(r.error, len(errors))
            continue
        ref = by_object.get(id(r.fields))
        if ref is None:
            doc = {n: [lay.dtype, list(lay.shape)] for n, lay in r.fields.items()}
            ref = by_text.setdefault(json.dumps(doc, sort_keys=True), len(layout_docs))
            if ref == len(layout_docs):
                layout_docs.append(doc)
            by_object[id(r.fields)] = ref
        layout_col[i] = ref
    cols = {
        "size": np.fromiter((r.size for r in records), "<i8", len(records)),
        "mtime_ns": np.fromiter((r.mtime_ns for r in records), "<i8", len(records)),
        "ctime_ns": np.fromiter((r.ctime_ns for r in records), "<i8", len(records)),
        "ino": np.fromiter((r.ino for r in records), "<u8", len(records)),
        "num_steps": np.fromiter((r.num_steps for r in records), "<i8", len(records)),
        "success": np.fromiter((r.success for r in records), "|b1", len(records)),
        "task": task_col,
        "layout": layout_col,
        "error": error_col,
    }
    for name in STRINGS:
        cols[f"{name}_blob"], cols[f"{name}_end"] = _strings([getattr(r, name) for r in records])
    tables = {"tasks": list(tasks), "layouts": layout_docs, "errors": list(errors)}
    return cols, tables


def write_table(root: Path, records: Sequence[EpisodeRecord], source: Path) -> None:
    """Write the table of ``records`` (read from the manifest ``source``) atomically."""
    cols, tables = _columns(records)
    st = os.stat(source)
    offsets, pos = {}, 0
    for name, arr in cols.items():
        offsets[name] = pos
        pos += -(-arr.nbytes // _ALIGN) * _ALIGN
    crc = 0
    pad = {name: -(-arr.nbytes // _ALIGN) * _ALIGN - arr.nbytes for name, arr in cols.items()}
    for name, arr in cols.items():
        crc = zlib.crc32(arr.tobytes(), crc)
        crc = zlib.crc32(bytes(pad[name]), crc)
    header = {
        "format": TABLE_FORMAT,
        "version": TABLE_VERSION,
        "source": list(identity_of(st)),
        "count": len(records),
        **tables,
        "columns": {
            name: {"dtype": arr.dtype.str, "offset": offsets[name], "length": int(arr.size)}
            for name, arr in cols.items()
        },
        "data_bytes": pos,
        "crc32": crc,
    }
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    start = -(-(16 + len(head)) // _ALIGN) * _ALIGN
    with atomic_write(table_path(root)) as fh:
        fh.write(_MAGIC + struct.pack("<Q", len(head)) + head + bytes(start - 16 - len(head)))
        for name, arr in cols.items():
            fh.write(arr.tobytes())
            fh.write(bytes(pad[name]))


@dataclass
class ManifestTable:
    """The episodes of one root as columns (see the module docstring); row order is the manifest's (by path)."""

    root: Path
    columns: dict[str, np.ndarray]
    tasks: list[str]
    layouts: list[dict[str, FieldLayout]]
    errors: list[str]

    def __len__(self) -> int:
        return len(self.columns["size"])

    @classmethod
    def open(cls, root: str | os.PathLike[str], *, write: bool = True) -> ManifestTable:
        """The table of ``root``'s manifest: mapped when it matches the manifest, else made from it.

        A missing or unusable manifest is built first (a scan, as
        :func:`teamvla_data.manifest.update_manifest`). ``write=False`` never writes.
        """
        root = Path(root).resolve()
        source = manifest_path(root)
        table = cls._map(root, source)
        if table is not None:
            return table
        records = load_manifest(root)
        if records is None:
            records, _ = update_manifest(root, write=write)
        if write and source.is_file():
            try:
                write_table(root, records, source)
            except OSError as exc:
                log.warning("cannot write %s (%s)", table_path(root), exc.strerror)
            else:
                table = cls._map(root, source)
                if table is not None:
                    return table
        cols, tables = _columns(records)
        return cls._from(root, cols, tables)

    @classmethod
    def _from(
        cls, root: Path, cols: dict[str, np.ndarray], tables: dict[str, Any]
    ) -> ManifestTable:
        layouts = [
            {str(n): FieldLayout(str(d), tuple(int(x) for x in s)) for n, (d, s) in doc.items()}
            for doc in tables["layouts"]
        ]
        return cls(
            root,
            cols,
            [str(t) for t in tables["tasks"]],
            layouts,
            [str(e) for e in tables["errors"]],
        )

    @classmethod
    def _map(cls, root: Path, source: Path) -> ManifestTable | None:
        path = table_path(root)
        try:
            st = os.stat(source)
            with open(path, "rb") as fh:
                magic, size = fh.read(8), fh.read(8)
                if magic != _MAGIC or len(size) != 8:
                    raise ValueError("not a manifest table")
                (head_len,) = struct.unpack("<Q", size)
                if head_len > 1 << 30:
                    raise ValueError("header too large")
                header = json.loads(fh.read(head_len))
            if (
                header.get("format") != TABLE_FORMAT
                or header.get("version") != TABLE_VERSION
                or header.get("source") != list(identity_of(st))
            ):
                return None  # made from another manifest (or version): rebuild
            start = -(-(16 + head_len) // _ALIGN) * _ALIGN
            data_bytes = int(header["data_bytes"])
            if os.path.getsize(path) != start + data_bytes:
                raise ValueError("truncated")
            with open(path, "rb") as fh:  # bounded memory: a few MB at a time
                fh.seek(start)
                crc, left = 0, data_bytes
                while left:
                    block = fh.read(min(_CRC_BLOCK, left))
                    if not block:
                        raise ValueError("truncated")
                    crc, left = zlib.crc32(block, crc), left - len(block)
            if crc != header["crc32"]:
                raise ValueError("checksum mismatch")
            data = np.memmap(path, np.uint8, "r", offset=start, shape=(data_bytes,))
            cols = {}
            for name, spec in header["columns"].items():
                dtype = np.dtype(spec["dtype"])
                if dtype.hasobject or dtype.str != spec["dtype"]:
                    raise ValueError(f"column {name}: unsupported dtype {spec['dtype']!r}")
                off, length = int(spec["offset"]), int(spec["length"])
                end = off + length * dtype.itemsize
                if off < 0 or end > data_bytes:
                    raise ValueError(f"column {name} outside the data")
                cols[name] = data[off:end].view(dtype)
            missing = {*NUMERIC, *(f"{s}_{k}" for s in STRINGS for k in ("blob", "end"))} - set(
                cols
            )
            if missing or len({len(cols[n]) for n in NUMERIC}) != 1:
                raise ValueError(f"columns missing or of unequal length: {sorted(missing)}")
            return cls._from(root, cols, header)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s is unusable (%s); rebuilding it from the manifest", path, exc)
            return None

    # ------------------------------------------------------------------ rows

    def string(self, name: str, row: int) -> str:
        """The string column ``name`` (``path``, ``episode_id``) of ``row``."""
        ends = self.columns[f"{name}_end"]
        start = int(ends[row - 1]) if row else 0
        return bytes(self.columns[f"{name}_blob"][start : int(ends[row])]).decode("utf-8")

    def select(
        self, tasks: Sequence[str] | None = None, *, success_only: bool = False
    ) -> np.ndarray:
        """Rows of readable episodes of ``tasks`` (all when None), successful ones only if asked."""
        keep = self.columns["layout"] >= 0
        if tasks is not None:
            wanted = [i for i, t in enumerate(self.tasks) if t in set(tasks)]
            keep &= np.isin(self.columns["task"], wanted)
        if success_only:
            keep &= self.columns["success"]
        return np.flatnonzero(keep)

    def record(self, row: int) -> EpisodeRecord:
        """Row ``row`` as an :class:`EpisodeRecord`."""
        c = self.columns
        layout = int(c["layout"][row])
        error = int(c["error"][row])
        return EpisodeRecord(
            self.root,
            self.string("path", row),
            int(c["size"][row]),
            int(c["mtime_ns"][row]),
            self.tasks[int(c["task"][row])],
            self.string("episode_id", row),
            bool(c["success"][row]),
            int(c["num_steps"][row]),
            self.layouts[layout] if layout >= 0 else {},
            self.errors[error] if error >= 0 else None,
            int(c["ctime_ns"][row]),
            int(c["ino"][row]),
        )

    def records(self, rows: Sequence[int] | np.ndarray) -> list[EpisodeRecord]:
        """Records of ``rows`` (only these become Python objects)."""
        return [self.record(int(r)) for r in rows]
