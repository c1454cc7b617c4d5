"""Per-root episode manifests: what is in a root, known without reading any array.

``ROOT/.teamvla/manifest.json`` lists every episode file under ``ROOT`` with
its relative path, task, episode id, success flag, step count, file size,
modification time (ns) and field layouts (taken from the file's metadata by
:func:`teamvla_schema.read_episode_meta`, which decompresses no arrays).

Updating is incremental: a ``scandir``/``stat`` pass lists the files; only
files whose (size, mtime_ns) differ from the manifest, or that are new, are
opened; removed files are dropped. Files that cannot be read are kept as error
records (so they are not re-read until they change). The manifest is written
atomically, and only when something changed; a root that cannot be written
(read-only media) still works, the manifest is then kept in memory only.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teamvla_schema.atomic import atomic_write_text
from teamvla_schema.episode import EPISODE_SUFFIX, read_episode_meta
from teamvla_schema.errors import SchemaError
from teamvla_schema.fields import FieldLayout

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "teamvla-manifest"
MANIFEST_VERSION = 1
#: Directory inside each root for the manifest (and, by default, caches).
STATE_DIR = ".teamvla"
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class EpisodeRecord:
    """One episode file as listed in a manifest.

    ``error`` is set (and the metadata fields are empty) for a file whose
    metadata could not be read; it says why.
    """

    root: Path
    path: str  # relative to root, '/'-separated
    size: int
    mtime_ns: int
    task: str = ""
    episode_id: str = ""
    success: bool = False
    num_steps: int = 0
    fields: dict[str, FieldLayout] = field(default_factory=dict, compare=False)
    error: str | None = None

    @property
    def abs_path(self) -> Path:
        """Absolute path of the episode file."""
        return self.root / self.path

    @property
    def stat_key(self) -> tuple[str, int, int]:
        """What identifies this version of the file: (path, size, mtime_ns)."""
        return (self.path, self.size, self.mtime_ns)


@dataclass
class ManifestUpdate:
    """What an update found: relative paths added, changed, removed, and how many were reused."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    reused: int = 0
    written: bool = False

    @property
    def dirty(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def manifest_path(root: str | os.PathLike[str]) -> Path:
    """Where the manifest of ``root`` lives."""
    return Path(root) / STATE_DIR / MANIFEST_NAME


def scan_root(root: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (size, mtime_ns) of every episode file under ``root``.

    One ``scandir`` walk with one ``stat`` per file; hidden directories (such as
    ``.teamvla``) and writers' temporary files are skipped.
    """
    found: dict[str, tuple[int, int]] = {}
    stack = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            raise SchemaError(f"cannot list directory: {exc.strerror}", path=directory) from None
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue  # state dirs, temporary files
            if entry.is_dir(follow_symlinks=True):
                stack.append((Path(entry.path), f"{prefix}{name}/"))
            elif name.endswith(
                EPISODE_SUFFIX
            ):  # writers' temporary files start with "." (skipped above)
                st = entry.stat(follow_symlinks=True)
                found[prefix + name] = (st.st_size, st.st_mtime_ns)
    return found


# --------------------------------------------------------------------------- JSON form


def _layouts_to_json(records: list[EpisodeRecord]) -> tuple[list[dict[str, Any]], list[int | None]]:
    # Most episodes share one layout: store each distinct layout once.
    table: list[dict[str, Any]] = []
    ids: dict[str, int] = {}
    refs: list[int | None] = []
    for rec in records:
        if rec.error is not None:
            refs.append(None)
            continue
        doc = {n: {"dtype": lay.dtype, "shape": list(lay.shape)} for n, lay in rec.fields.items()}
        text = json.dumps(doc, sort_keys=True)
        if text not in ids:
            ids[text] = len(table)
            table.append(doc)
        refs.append(ids[text])
    return table, refs


def manifest_to_json(records: list[EpisodeRecord]) -> str:
    """Serialise records (any order) as manifest JSON, sorted by path."""
    records = sorted(records, key=lambda r: r.path)
    layouts, refs = _layouts_to_json(records)
    episodes = []
    for rec, ref in zip(records, refs, strict=True):
        entry: dict[str, Any] = {"path": rec.path, "size": rec.size, "mtime_ns": rec.mtime_ns}
        if rec.error is not None:
            entry["error"] = rec.error
        else:
            entry.update(
                task=rec.task,
                episode_id=rec.episode_id,
                success=rec.success,
                num_steps=rec.num_steps,
                layout=ref,
            )
        episodes.append(entry)
    doc = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "layouts": layouts,
        "episodes": episodes,
    }
    return json.dumps(doc, separators=(",", ":"))


def manifest_from_json(text: str, root: Path, *, source: Path) -> list[EpisodeRecord]:
    """Parse manifest JSON; raise :class:`SchemaError` naming ``source`` if it is malformed."""
    try:
        doc = json.loads(text)
        if doc.get("format") != MANIFEST_FORMAT or doc.get("version") != MANIFEST_VERSION:
            raise ValueError(f"expected format {MANIFEST_FORMAT!r} version {MANIFEST_VERSION}")
        layouts = [
            {
                n: FieldLayout(str(s["dtype"]), tuple(int(d) for d in s["shape"]))
                for n, s in lay.items()
            }
            for lay in doc["layouts"]
        ]
        records = []
        for e in doc["episodes"]:
            if "error" in e:
                records.append(
                    EpisodeRecord(
                        root, e["path"], int(e["size"]), int(e["mtime_ns"]), error=str(e["error"])
                    )
                )
            else:
                records.append(
                    EpisodeRecord(
                        root,
                        str(e["path"]),
                        int(e["size"]),
                        int(e["mtime_ns"]),
                        task=str(e["task"]),
                        episode_id=str(e["episode_id"]),
                        success=bool(e["success"]),
                        num_steps=int(e["num_steps"]),
                        fields=layouts[e["layout"]],
                    )
                )
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise SchemaError(f"malformed manifest: {exc}", path=source) from None
    return records


# --------------------------------------------------------------------------- building


def read_record(root: Path, rel: str, size: int, mtime_ns: int) -> EpisodeRecord:
    """Read one file's metadata into a record; an unreadable file becomes an error record."""
    try:
        header = read_episode_meta(root / rel)
    except SchemaError as exc:
        return EpisodeRecord(root, rel, size, mtime_ns, error=str(exc))
    meta = header.meta
    return EpisodeRecord(
        root,
        rel,
        size,
        mtime_ns,
        task=meta.task,
        episode_id=meta.episode_id,
        success=meta.success,
        num_steps=meta.num_steps,
        fields=dict(header.fields),
    )


def load_manifest(root: str | os.PathLike[str]) -> list[EpisodeRecord] | None:
    """The records stored in ``root``'s manifest, or None if there is none (or it is unreadable)."""
    root = Path(root).resolve()
    path = manifest_path(root)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read %s (%s); rebuilding the manifest", path, exc.strerror)
        return None
    try:
        return manifest_from_json(text, root, source=path)
    except SchemaError as exc:
        log.warning("%s; rebuilding it", exc)
        return None


def update_manifest(
    root: str | os.PathLike[str], *, write: bool = True
) -> tuple[list[EpisodeRecord], ManifestUpdate]:
    """Bring ``root``'s manifest up to date and return its records (sorted by path).

    Only new or changed files (by size and mtime_ns) are opened. The manifest
    is rewritten atomically when anything changed and ``write`` is true.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise SchemaError("episode root does not exist or is not a directory", path=root)
    old = {rec.path: rec for rec in (load_manifest(root) or [])}
    on_disk = scan_root(root)
    update = ManifestUpdate()
    records: list[EpisodeRecord] = []
    for rel in sorted(on_disk):
        size, mtime_ns = on_disk[rel]
        prev = old.get(rel)
        if prev is not None and prev.size == size and prev.mtime_ns == mtime_ns:
            records.append(prev)
            update.reused += 1
            continue
        (update.changed if prev is not None else update.added).append(rel)
        records.append(read_record(root, rel, size, mtime_ns))
    update.removed = sorted(set(old) - set(on_disk))
    if update.dirty and write:
        try:
            atomic_write_text(manifest_path(root), manifest_to_json(records))
            update.written = True
        except OSError as exc:
            log.warning(
                "cannot write the manifest of %s (%s); using it from memory", root, exc.strerror
            )
    if update.dirty:
        log.info(
            "manifest of %s: %d added, %d changed, %d removed, %d reused",
            root,
            len(update.added),
            len(update.changed),
            len(update.removed),
            update.reused,
        )
    return records, update


def iter_valid(records: list[EpisodeRecord]) -> Iterator[EpisodeRecord]:
    """The records whose metadata could be read."""
    return (r for r in records if r.error is None)
