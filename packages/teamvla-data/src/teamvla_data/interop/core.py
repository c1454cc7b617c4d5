"""What every converter shares: the in-memory episode, the report, our own format's
reader and writer, and atomic publication of whole files and directories."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from teamvla_schema.atomic import fsync_path
from teamvla_schema.episode import EpisodeWriter, find_episodes, read_episode, read_episode_meta
from teamvla_schema.errors import SchemaError
from teamvla_schema.fields import (
    KNOWN_FIELDS,
    REQUIRED_FIELDS,
)

#: Key of the episode's user metadata where converters keep what has no counterpart.
INTEROP_KEY = "interop"


@dataclass
class ConvEpisode:
    """One episode on its way between formats: metadata plus one stacked array per field.

    ``columns`` maps our field names to arrays stacked over steps (strings as
    ``<U`` arrays), in the order they are written. ``success`` is the episode's
    overall flag (``None``: the last step's). ``source`` names where it came
    from, for error messages.
    """

    task: str
    episode_id: str
    columns: dict[str, np.ndarray]
    user: dict[str, Any] = field(default_factory=dict)
    fps: float | None = None
    success: bool | None = None
    source: str = ""

    @property
    def num_steps(self) -> int:
        """The number of steps (the length of every column)."""
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def check_required(self) -> None:
        """Raise :class:`SchemaError` naming the episode if a required field is missing."""
        missing = [f for f in REQUIRED_FIELDS if f not in self.columns]
        if missing:
            raise SchemaError(
                f"missing required field(s) {', '.join(missing)}",
                path=self.source or None,
                field=missing[0],
            )

    def layout(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """``{field: (dtype, per-step shape)}``, strings as ``"str"`` whatever their width."""
        return {
            n: ("str" if c.dtype.kind == "U" else str(c.dtype), tuple(c.shape[1:]))
            for n, c in self.columns.items()
        }

    def check_layout(self, want: Mapping[str, tuple[str, tuple[int, ...]]], why: str) -> None:
        """Raise :class:`SchemaError` unless the episode's :meth:`layout` is ``want`` (the first episode's)."""
        have = self.layout()
        where = self.source or None
        if set(have) != set(want):
            raise SchemaError(
                f"episode fields {sorted(have)} differ from the first episode's {sorted(want)}; {why}",
                path=where,
            )
        for name, lay in have.items():
            if lay != want[name]:
                raise SchemaError(
                    f"expected {want[name][0]}{list(want[name][1])} (as in the first episode), "
                    f"received {lay[0]}{list(lay[1])}; {why}",
                    path=where,
                    field=name,
                )

    def remembered(self, fmt: str) -> dict[str, Any]:
        """What an import from ``fmt`` recorded in the user metadata (keys, layouts, names...)."""
        section = self.user.get(INTEROP_KEY)
        found = section.get(fmt) if isinstance(section, dict) else None
        return found if isinstance(found, dict) else {}


class Report:
    """Notes about a conversion (what was kept where, what has no counterpart), counted."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.largest: dict[str, float] = {}

    def note(self, message: str, change: float | None = None) -> None:
        """Record ``message`` once more (the same message from many episodes is counted);
        ``change`` is a size to report the largest of (a rounding error, say)."""
        self.counts[message] += 1
        if change is not None:
            self.largest[message] = max(change, self.largest.get(message, change))

    def lines(self) -> list[str]:
        """The notes, each with how many episodes it concerned when more than one."""
        out = []
        for m, n in self.counts.items():
            text = f"{m}, largest change {self.largest[m]:.3g}" if m in self.largest else m
            out.append(text if n == 1 else f"{text} [{n} episodes]")
        return out


# --------------------------------------------------------------------------- our format


def episode_field_order(path: Path) -> list[str]:
    """The fields of an episode file in the order they are stored (the writer's step order)."""
    with zipfile.ZipFile(path) as zf:
        return [n[:-4] for n in zf.namelist() if n.endswith(".npy") and n != "__meta__.npy"]


def iter_teamvla(root: str | os.PathLike[str]) -> Iterator[ConvEpisode]:
    """Every episode under ``root`` (sorted by path), fully read."""
    paths = find_episodes(root)
    if not paths:
        raise SchemaError("no episode files (<task>/<episode_id>.npz) found", path=root)
    for path in paths:
        ep = read_episode(path)
        order = [f for f in episode_field_order(path) if f in ep.arrays]
        order += [f for f in ep.arrays if f not in order]
        yield ConvEpisode(
            task=ep.meta.task,
            episode_id=ep.meta.episode_id,
            columns={name: ep.arrays[name] for name in order},
            user=dict(ep.meta.user),
            fps=ep.meta.fps,
            success=ep.meta.success,
            source=str(path),
        )


def count_teamvla(root: str | os.PathLike[str]) -> int:
    """How many episode files are under ``root``."""
    return len(find_episodes(root))


class TeamvlaWriter:
    """Writes :class:`ConvEpisode` objects as episode files under ``root`` through ``EpisodeWriter``.

    Every step is validated by :class:`teamvla_schema.EpisodeWriter` (errors
    name the source file, field and step) and each file is published
    atomically, never replacing an existing file; the metadata's ``fps`` is kept.
    ``image_codec`` / ``video_crf`` are the writer's (camera fields as image
    streams, docs/storage.md; ``None``: plain arrays); :attr:`psnr` collects the
    PSNR of each ``video`` field written, per field name.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        image_codec: str | None = None,
        video_crf: int = 30,
    ) -> None:
        self.root = Path(root)
        self.written: list[Path] = []
        self.psnr: dict[str, list[float]] = {}
        # Fails here (unknown codec, bad crf, PyAV missing) before anything is read or written.
        self._writer = EpisodeWriter(
            self.root, overwrite=False, image_codec=image_codec, video_crf=video_crf
        )

    @property
    def cameras(self) -> str | None:
        """How the camera fields are stored, for the summary (``None``: plain arrays)."""
        codec, crf = self._writer.image_codec, self._writer.video_crf
        if codec == "video":
            return f"video image streams (AV1, crf {crf}; lossy)"
        if codec is not None:
            return f"{codec} image streams (bit-exact)"
        return None

    def write(self, ep: ConvEpisode) -> Path:
        """Validate and write one episode; return its path."""
        if ep.num_steps == 0:
            raise SchemaError("episode has no steps", path=ep.source or None)
        target = self.root / ep.task / f"{ep.episode_id}.npz"
        if target.exists():
            raise SchemaError("episode already exists; convert into an empty root", path=target)
        w = self._writer
        meta = w.start_episode(
            {"task": ep.task, "episode_id": ep.episode_id, "user": ep.user, "fps": ep.fps}
        )
        try:
            for t in range(ep.num_steps):
                step = {name: col[t] for name, col in ep.columns.items()}
                if step.get("task") != meta.task:
                    raise SchemaError(
                        f"expected task {meta.task!r} (the episode's task), received {step.get('task')!r}",
                        field="task",
                        step=t,
                    )
                w.add_step(step)
            path = w.end_episode(success=ep.success)
        except SchemaError as exc:
            if w.in_episode:
                w.discard_episode()
            if isinstance(exc.__cause__, FileExistsError) or "already exists" in str(exc):
                raise SchemaError(
                    "episode already exists; convert into an empty root", path=target
                ) from None
            raise exc.with_path(ep.source) if ep.source else exc from None
        except BaseException:
            if w.in_episode:
                w.discard_episode()
            raise
        self.written.append(path)
        if self._writer.image_codec == "video":
            for name, enc in read_episode_meta(path).encodings.items():
                if enc.psnr is not None:
                    self.psnr.setdefault(name, []).append(enc.psnr)
        return path


def coerce_known(columns: dict[str, np.ndarray], where: str, report: Report) -> None:
    """Give schema-known fields their schema dtype, in place, the way an import must.

    Floats are rounded to float32 where the schema says so (the largest change
    is noted); 0/1 numbers become bools for bool fields; anything else that
    does not fit is left for the episode's validation to refuse.
    """
    for name, col in columns.items():
        spec = KNOWN_FIELDS.get(name)
        if spec is None or col.dtype.kind not in "biuf":
            continue
        if spec.kind == "bool" and col.dtype != np.bool_ and np.isin(col, (0, 1)).all():
            columns[name] = col.astype(bool)
        elif spec.kind == "array" and spec.dtype and np.dtype(spec.dtype).kind == "f":
            want = np.dtype(spec.dtype)
            if col.dtype == want or col.dtype.kind == "b":
                continue
            out = col.astype(want)
            err = float(
                np.max(np.abs(out.astype(np.float64) - col.astype(np.float64)), initial=0.0)
            )
            if err:
                report.note(f"{name}: {col.dtype} rounded to {want} (the schema's dtype)", err)
            columns[name] = out


def restore_dtypes(columns: dict[str, np.ndarray], dtypes: Mapping[str, str], where: str) -> None:
    """Cast columns back to the dtypes an export recorded, refusing any cast that changes a value."""
    for name, dtype in dtypes.items():
        col = columns.get(name)
        if col is None or str(col.dtype) == dtype:
            continue
        out = col.astype(dtype)
        if not np.array_equal(out.astype(col.dtype), col):
            raise SchemaError(
                f"stored values do not fit the recorded dtype {dtype}", path=where, field=name
            )
        columns[name] = out


def field_dtypes(ep: ConvEpisode) -> dict[str, str]:
    """``{field: dtype}`` of the episode's non-string fields, for :func:`restore_dtypes`."""
    return {n: str(c.dtype) for n, c in ep.columns.items() if c.dtype.kind != "U"}


# --------------------------------------------------------------------------- atomic output


def temp_sibling(target: Path) -> Path:
    """A hidden temporary name next to ``target`` that scanners ignore."""
    return target.parent / f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (and ``root`` itself)."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            fsync_path(Path(dirpath) / name)
        fsync_path(Path(dirpath))


def check_target(target: Path, overwrite: bool) -> None:
    """Refuse an existing output unless ``overwrite``."""
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists (pass --overwrite to replace it)")


def publish(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move a finished, fsynced temporary file or directory to ``target`` in one rename.

    An existing ``target`` is replaced only with ``overwrite`` (moved aside
    first, deleted after the rename).
    """
    old: Path | None = None
    if target.exists():
        if not overwrite:
            raise FileExistsError(f"{target} already exists (pass --overwrite to replace it)")
        old = temp_sibling(target)
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except OSError:
        if old is not None:
            os.rename(old, target)
        raise
    fsync_path(target.parent)
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()


def remove_temp(tmp: Path) -> None:
    """Delete an unfinished temporary output."""
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def json_ready(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into JSON types."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value
