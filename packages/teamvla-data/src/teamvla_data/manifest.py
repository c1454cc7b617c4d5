"""Per-root episode manifests: what is in a root, known without reading any array.

``ROOT/.teamvla/manifest.json`` lists every episode file under ``ROOT`` with
its relative path, task, episode id, success flag, step count, file identity
(size, modification time, status-change time, both in ns, and inode) and field
layouts (taken from the file's metadata by
:func:`teamvla_schema.read_episode_meta`, which decompresses no arrays).

Updating is incremental: a ``scandir``/``stat`` pass lists the files; only
files whose identity differs from the manifest, or that are new, are opened;
removed files are dropped. The status-change time (``st_ctime_ns``) cannot be
set by users and changes on every write, rename or ``utime``, and a file
replaced by another has a new inode, so a rewrite that keeps size and
modification time (``os.utime`` restored it, a copy tool preserved it) is
still seen. Files that cannot be read are kept as error records (so they are
not re-read until they change). The manifest is written atomically with a
checksum of its content, and only when something changed; an edited,
damaged or unparsable manifest is rebuilt with a warning, one of a newer
version is used from memory and left as it is. A root that cannot be written
(read-only media) still works, the manifest is then kept in memory only.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teamvla_schema.atomic import atomic_write_text, read_regular
from teamvla_schema.episode import EPISODE_SUFFIX, read_episode_meta, walk_tree
from teamvla_schema.errors import SchemaError
from teamvla_schema.fields import FieldLayout

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "teamvla-manifest"
#: 2: file identity includes ctime_ns and inode; the file ends with a checksum of its content.
MANIFEST_VERSION = 2
CHECKSUM_KEY = "checksum"
#: What identifies one version of a file: (size, mtime_ns, ctime_ns, inode).
FileIdentity = tuple[int, int, int, int]
#: Directory inside each root for the manifest (and, by default, caches).
STATE_DIR = ".teamvla"
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class EpisodeRecord:
    """One episode file as listed in a manifest.

    ``error`` is set (and the metadata fields are empty) for a file whose
    metadata could not be read; it says why. ``size``, ``mtime_ns``,
    ``ctime_ns`` and ``ino`` identify the version of the file the record
    describes (see :attr:`identity`); an entry that cannot even be ``stat``-ed
    (a dangling symlink) has size -1.
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
    ctime_ns: int = 0
    ino: int = 0

    @property
    def abs_path(self) -> Path:
        """Absolute path of the episode file."""
        return self.root / self.path

    @property
    def identity(self) -> FileIdentity:
        """(size, mtime_ns, ctime_ns, inode) of the version of the file this record describes."""
        return (self.size, self.mtime_ns, self.ctime_ns, self.ino)

    @property
    def stat_key(self) -> tuple[str, int, int, int, int]:
        """What identifies this version of the file: (path, size, mtime_ns, ctime_ns, inode)."""
        return (self.path, *self.identity)


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


def identity_of(st: os.stat_result) -> FileIdentity:
    """The :data:`FileIdentity` of a ``stat`` result."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def scan_root(root: Path) -> tuple[dict[str, FileIdentity], dict[str, str]]:
    """Every episode file under ``root``: (relative path -> identity, relative path -> error).

    One ``scandir`` walk with one ``stat`` per file; hidden directories (such as
    ``.teamvla``) and writers' temporary files are skipped. Directory symlinks
    are followed, each real directory once (symlink loops end). An entry named
    ``*.npz`` that cannot be ``stat``-ed (a dangling or looping symlink) is
    returned with the reason instead of an identity; a directory that cannot be
    listed raises :class:`SchemaError` naming it.
    """
    found: dict[str, FileIdentity] = {}
    unreadable: dict[str, str] = {}
    for prefix, entries in walk_tree(root, skip_hidden=True):
        for entry in entries:
            name = entry.name
            if not name.endswith(EPISODE_SUFFIX):  # temporary files start with "." (skipped)
                continue
            try:
                st = entry.stat(follow_symlinks=True)
            except OSError as exc:
                unreadable[prefix + name] = str(
                    SchemaError(f"cannot open episode file: {exc.strerror}", path=entry.path)
                )
                continue
            found[prefix + name] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    return found, unreadable


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


#: What each row of the manifest's "episodes" holds, in order (one row per file, sorted by
#: path; a JSON array parses much faster than an object with keys). "layout" indexes
#: "layouts"; it is null, and "error" says why, for a file whose metadata could not be read.
EPISODE_COLUMNS = (
    *("path", "size", "mtime_ns", "ctime_ns", "ino"),
    *("task", "episode_id", "success", "num_steps", "layout", "error"),
)


def manifest_to_json(records: list[EpisodeRecord]) -> str:
    """Serialise records (any order) as manifest JSON, sorted by path."""
    records = sorted(records, key=lambda r: r.path)
    layouts, refs = _layouts_to_json(records)
    rows = [
        [
            *(r.path, r.size, r.mtime_ns, r.ctime_ns, r.ino),
            *(r.task, r.episode_id, r.success, r.num_steps, ref, r.error),
        ]
        for r, ref in zip(records, refs, strict=True)
    ]
    doc = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "layouts": layouts,
        "episodes": rows,
    }
    return with_checksum(json.dumps(doc, separators=(",", ":")))


def with_checksum(body: str) -> str:
    """``body`` (a compact JSON object) with a last key holding the sha256 of ``body`` itself."""
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    return f'{body[:-1]},"{CHECKSUM_KEY}":"{digest}"}}'


def verify_checksum(data: str | bytes) -> bool:
    """Whether ``data`` ends with the checksum :func:`with_checksum` put there, and it matches.

    Any edit (or a damaged byte) anywhere in the file makes this false, unless
    the editor recomputed the checksum. Cheap: nothing is re-serialised or copied.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    marker = f',"{CHECKSUM_KEY}":"'.encode()
    at = raw.rfind(marker)
    tail = raw[at + len(marker) :]
    if at < 0 or len(tail) != 64 + 2 or not tail.endswith(b'"}'):
        return False
    digest = hashlib.sha256(memoryview(raw)[:at])
    digest.update(b"}")
    return digest.hexdigest().encode() == tail[:64]


class NewerManifestError(SchemaError):
    """A manifest written by a newer teamvla-data (a higher version): not ours to overwrite."""


def _int(value: Any, what: str, *, minimum: int | None = 0) -> int:
    # Exactly an int: no bool, float or string that happens to convert.
    if type(value) is not int or (minimum is not None and value < minimum):
        raise ValueError(f"{what} must be an int >= {minimum}, received {value!r}")
    return value


def _str(value: Any, what: str) -> str:
    if type(value) is not str:
        raise ValueError(f"{what} must be a string, received {value!r}")
    return value


def _bad_path(path: str) -> bool:
    # Relative, '/'-separated, no empty, '.' or '..' component: inside the root.
    wrapped = f"/{path}/"
    return (
        not path
        or path[0] == "/"
        or "\\" in path
        or "//" in path
        or "/../" in wrapped
        or "/./" in wrapped
    )


@contextlib.contextmanager
def bulk_load() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large JSON document becomes objects.

    Parsing a manifest or cache index allocates one container per episode and
    creates no reference cycles; with the collector running, those allocations
    trigger collections that traverse every live object (a whole other dataset,
    say) and cost more than the parse. Reference counting still frees memory.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def manifest_from_json(text: str | bytes, root: Path, *, source: Path) -> list[EpisodeRecord]:
    """Parse manifest JSON; raise :class:`SchemaError` naming ``source`` if it is malformed.

    Every value is checked for its exact type; a manifest without a valid
    checksum (edited by hand, damaged) is malformed. A manifest of a newer
    version raises :class:`NewerManifestError`.
    """
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"expected format {MANIFEST_FORMAT!r}")
        version = doc.get("version")
        if type(version) is int and version > MANIFEST_VERSION:
            raise NewerManifestError(
                f"manifest version {version} is newer than this teamvla-data's "
                f"({MANIFEST_VERSION})",
                path=source,
            )
        if version != MANIFEST_VERSION:
            raise ValueError(f"expected version {MANIFEST_VERSION}, received {version!r}")
        if not verify_checksum(text):
            raise ValueError("checksum missing or wrong (edited or damaged)")
        layouts = []
        for lay in doc["layouts"]:
            fields = {}
            for n, spec in lay.items():
                shape = spec["shape"]
                if not isinstance(shape, list):
                    raise ValueError(f"layout shape must be a list, received {shape!r}")
                fields[_str(n, "field name")] = FieldLayout(
                    _str(spec["dtype"], "dtype"), tuple(_int(d, "dimension") for d in shape)
                )
            layouts.append(fields)
        rows = doc["episodes"]
        width = len(EPISODE_COLUMNS)
        if type(rows) is not list or not all(type(r) is list and len(r) == width for r in rows):
            raise ValueError(f"'episodes' must be a list of rows {list(EPISODE_COLUMNS)}")
        n = len(rows)
        columns = list(zip(*rows, strict=True)) if rows else [()] * width
        cols = dict(zip(EPISODE_COLUMNS, columns, strict=True))
        for name, allowed in (
            ("path", {str}),
            ("size", {int}),
            ("mtime_ns", {int}),
            ("ctime_ns", {int}),
            ("ino", {int}),
            ("task", {str}),
            ("episode_id", {str}),
            ("success", {bool}),
            ("num_steps", {int}),
            ("layout", {int, type(None)}),
            ("error", {str, type(None)}),
        ):
            col = cols[name]
            # Exact types (no bool for an int, no float or string that happens to convert).
            if not set(map(type, col)) <= allowed:
                raise ValueError(f"every {name!r} must be one of {allowed}")
        if n and (min(cols["size"]) < -1 or min(cols["ino"]) < 0 or min(cols["num_steps"]) < 0):
            raise ValueError("negative size, inode or step count")
        if any(map(_bad_path, cols["path"])):
            raise ValueError("a path that is not relative to the root")
        # A null layout goes with an error (a file whose metadata could not be read).
        refs, errors = cols["layout"], cols["error"]
        if refs.count(None) != n - errors.count(None) or any(
            (r is None) != (e is not None) for r, e in zip(refs, errors, strict=True)
        ):
            raise ValueError("'layout' must be null exactly where 'error' is set")
        used = {r for r in refs if r is not None}
        if used and (min(used) < 0 or max(used) >= len(layouts)):
            raise ValueError(f"layout index out of range (there are {len(layouts)} layouts)")
        records = [
            EpisodeRecord(root, p, sz, mt, t, i, ok, k, {} if r is None else layouts[r], e, ct, ino)
            for p, sz, mt, ct, ino, t, i, ok, k, r, e in rows
        ]
    except NewerManifestError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError) as exc:
        raise SchemaError(f"malformed manifest: {exc}", path=source) from None
    return records


# --------------------------------------------------------------------------- building


def read_record(root: Path, rel: str, identity: FileIdentity) -> EpisodeRecord:
    """Read one file's metadata into a record; an unreadable file becomes an error record."""
    size, mtime_ns, ctime_ns, ino = identity
    try:
        header = read_episode_meta(root / rel)
    except SchemaError as exc:
        return EpisodeRecord(root, rel, size, mtime_ns, error=str(exc), ctime_ns=ctime_ns, ino=ino)
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
        ctime_ns=ctime_ns,
        ino=ino,
    )


def _load(root: Path) -> tuple[list[EpisodeRecord] | None, bool]:
    """(records or None, whether the manifest may be overwritten)."""
    path = manifest_path(root)
    try:
        text = read_regular(path)  # bytes: json.loads decodes (and refuses non-UTF-8)
    except FileNotFoundError:
        return None, True
    except OSError as exc:  # unreadable, a directory, a FIFO...
        log.warning("cannot read %s (%s); rebuilding the manifest", path, exc.strerror)
        return None, True
    try:
        with bulk_load():
            return manifest_from_json(text, root, source=path), True
    except NewerManifestError as exc:
        log.warning(
            "%s; indexing the root in memory and leaving that manifest as it is "
            "(upgrade teamvla-data to use it)",
            exc,
        )
        return None, False
    except SchemaError as exc:
        log.warning("%s; rebuilding it", exc)
        return None, True


def load_manifest(root: str | os.PathLike[str]) -> list[EpisodeRecord] | None:
    """The records stored in ``root``'s manifest, or None if there is none (or it is unusable)."""
    return _load(Path(root).resolve())[0]


def update_manifest(
    root: str | os.PathLike[str], *, write: bool = True
) -> tuple[list[EpisodeRecord], ManifestUpdate]:
    """Bring ``root``'s manifest up to date and return its records (sorted by path).

    Only new or changed files (by size, mtime_ns, ctime_ns and inode) are
    opened. The manifest is rewritten atomically when anything changed (or it
    had to be rebuilt) and ``write`` is true.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise SchemaError("episode root does not exist or is not a directory", path=root)
    loaded, writable = _load(root)
    old = {rec.path: rec for rec in (loaded or [])}
    on_disk, unreadable = scan_root(root)
    update = ManifestUpdate()
    records: list[EpisodeRecord] = []
    for rel in sorted([*on_disk, *unreadable]) if unreadable else sorted(on_disk):
        prev = old.get(rel)
        if unreadable and rel in unreadable:
            reason = unreadable[rel]
            if prev is not None and prev.error == reason and prev.size == -1:
                records.append(prev)
                update.reused += 1
                continue
            (update.changed if prev is not None else update.added).append(rel)
            records.append(EpisodeRecord(root, rel, -1, 0, error=reason))
            continue
        size, mtime_ns, ctime_ns, ino = identity = on_disk[rel]
        if (
            prev is not None
            and prev.mtime_ns == mtime_ns
            and prev.ctime_ns == ctime_ns
            and prev.size == size
            and prev.ino == ino
        ):
            records.append(prev)
            update.reused += 1
            continue
        (update.changed if prev is not None else update.added).append(rel)
        records.append(read_record(root, rel, identity))
    update.removed = sorted(set(old).difference(on_disk, unreadable))
    rebuilt = loaded is None and bool(records)  # a missing or unusable manifest is replaced
    if (update.dirty or rebuilt) and write and writable:
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
