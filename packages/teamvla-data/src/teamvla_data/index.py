"""Episode selection from manifests: merge roots, filter, cap, split. Metadata only.

Everything here is deterministic: episodes are ordered by ``(task, episode_id)``
whatever the roots, file system or write order, and caps and the train/val
split depend only on each episode's ``(task, episode_id)`` and ``split_seed``.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from teamvla_schema.errors import SchemaError
from teamvla_schema.fields import FieldLayout

from teamvla_data.manifest import EpisodeRecord, ManifestUpdate, update_manifest

log = logging.getLogger(__name__)

Split = Literal["train", "val", "all"]

#: The episode fields the dataset reads, with the dtype and rank each must have.
#: Sizes named by letters (H, W, N) must agree across all selected episodes.
DATA_FIELDS: dict[str, tuple[str, tuple[int | str, ...]]] = {
    "rgb_a": ("uint8", ("H", "W", 3)),
    "rgb_b": ("uint8", ("H", "W", 3)),
    "q_a": ("float32", ("N",)),
    "q_b": ("float32", ("N",)),
    "action_a": ("float32", ("N",)),
    "action_b": ("float32", ("N",)),
    "grip_a": ("float32", ()),
    "grip_b": ("float32", ()),
    "instruction": ("str", ()),
}


@dataclass(frozen=True)
class EpisodeInfo:
    """One episode of a dataset: ``index`` is its position in ``dataset.episodes``."""

    index: int
    task: str
    episode_id: str
    success: bool
    num_steps: int
    first_sample: int  # dataset index of its step 0
    record: EpisodeRecord = field(repr=False, compare=False)

    @property
    def path(self) -> Path:
        """The episode file."""
        return self.record.abs_path


@dataclass(frozen=True)
class Skipped:
    """An episode file left out because it is corrupt or invalid (``on_error='skip'``)."""

    path: str
    reason: str


@dataclass
class EpisodeIndex:
    """The valid episodes of one or more roots, sorted by (task, episode_id).

    ``bad`` holds the files whose metadata could not be read. Opening builds or
    refreshes each root's manifest (see :mod:`teamvla_data.manifest`).
    """

    roots: list[Path]
    records: list[EpisodeRecord]
    bad: list[EpisodeRecord] = field(default_factory=list)
    updates: dict[Path, ManifestUpdate] = field(default_factory=dict)

    @classmethod
    def open(
        cls, roots: Sequence[str | os.PathLike[str]] | str | os.PathLike[str], *, write: bool = True
    ) -> EpisodeIndex:
        """Open (and update the manifests of) ``roots``.

        Raises :class:`SchemaError` if an episode id appears twice for one task,
        naming both files.
        """
        if isinstance(roots, str | os.PathLike):
            roots = [roots]
        resolved: list[Path] = []
        for r in roots:
            p = Path(r).resolve()
            if p not in resolved:
                resolved.append(p)
        if not resolved:
            raise SchemaError("no episode roots given")
        good: list[EpisodeRecord] = []
        bad: list[EpisodeRecord] = []
        updates = {}
        for root in resolved:
            records, updates[root] = update_manifest(root, write=write)
            for rec in records:
                (bad if rec.error is not None else good).append(rec)
        good.sort(key=lambda r: (r.task, r.episode_id))
        for prev, rec in itertools.pairwise(good):
            if (prev.task, prev.episode_id) == (rec.task, rec.episode_id):
                raise SchemaError(
                    f"episode id {rec.episode_id!r} of task {rec.task!r} appears twice: "
                    f"{prev.abs_path} and {rec.abs_path}; episode ids must be unique per task across roots",
                    path=rec.abs_path,
                )
        bad.sort(key=lambda r: str(r.abs_path))
        return cls(resolved, good, bad, updates)

    @property
    def tasks(self) -> list[str]:
        """Sorted task slugs present."""
        return sorted({r.task for r in self.records})

    @property
    def num_steps(self) -> int:
        return sum(r.num_steps for r in self.records)


def unit_hash(*parts: object) -> float:
    """A deterministic number in [0, 1) from ``parts`` (independent of Python's hash seed)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def check_layout(rec: EpisodeRecord, dims: dict[str, tuple[int, str]]) -> str | None:
    """Why ``rec`` cannot be used by the dataset, or None. ``dims`` collects H, W, N across episodes."""
    if rec.num_steps < 1:
        return "episode has no steps"
    for name, (dtype, shape) in DATA_FIELDS.items():
        lay: FieldLayout | None = rec.fields.get(name)
        if lay is None:
            return f"field {name!r}: missing"
        if lay.dtype != dtype or len(lay.shape) != len(shape):
            want = f"{dtype}[{','.join(str(d) for d in shape)}]"
            return (
                f"field {name!r}: expected {want} per step, received {lay.dtype}{list(lay.shape)}"
            )
        for dim, size in zip(shape, lay.shape, strict=True):
            if isinstance(dim, int) and dim != size:
                return f"field {name!r}: expected size {dim}, received {size}"
            if isinstance(dim, str) and dim in dims and dims[dim][0] != size:
                ref_size, ref_path = dims[dim]
                return (
                    f"field {name!r}: {dim}={size} but {ref_path} has {dim}={ref_size}; "
                    "all episodes of a dataset must share image size and joint count"
                )
    for name, (_, shape) in DATA_FIELDS.items():
        for dim, size in zip(shape, rec.fields[name].shape, strict=True):
            if isinstance(dim, str):
                dims.setdefault(dim, (size, str(rec.abs_path)))
    return None


def select_episodes(
    index: EpisodeIndex,
    *,
    tasks: Sequence[str] | None = None,
    success_only: bool = False,
    max_episodes_per_task: int | None = None,
    split_seed: int = 0,
    on_error: Literal["raise", "skip"] = "raise",
) -> tuple[list[EpisodeRecord], list[Skipped]]:
    """The usable episodes after task filter, success filter and per-task cap, in (task, id) order.

    Files with unreadable metadata or a layout the dataset cannot use raise a
    :class:`SchemaError` naming the file (``on_error='raise'``) or are returned
    as :class:`Skipped`. Only files of the requested tasks are checked for
    layout; unreadable files are always reported (their task is unknown).
    """
    skipped: list[Skipped] = []

    def reject(path: Path, reason: str) -> None:
        if on_error == "raise":
            raise SchemaError(f"{reason} (pass on_error='skip' to leave such files out)", path=path)
        skipped.append(Skipped(str(path), reason))

    for rec in index.bad:
        assert rec.error is not None
        # The stored error text already names the file; strip it to keep the reason short.
        reason = rec.error.removeprefix(f"{rec.abs_path}: ")
        reject(rec.abs_path, reason)

    records = index.records
    if tasks is not None:
        unknown = sorted(set(tasks) - set(index.tasks))
        if unknown:
            close = [difflib.get_close_matches(t, index.tasks, n=1, cutoff=0.6) for t in unknown]
            hint = "; ".join(f"did you mean {c[0]!r} for {t!r}?" for t, c in zip(unknown, close, strict=True) if c)  # fmt: skip
            raise SchemaError(
                f"task(s) {unknown} have no episodes under {[str(r) for r in index.roots]}; "
                f"tasks found: {index.tasks}" + (f"; {hint}" if hint else "")
            )
        wanted = set(tasks)
        records = [r for r in records if r.task in wanted]
    if success_only:
        records = [r for r in records if r.success]

    dims: dict[str, tuple[int, str]] = {}
    usable = []
    known_good: set[int] = set()  # records from one manifest share each distinct layout object
    for rec in records:
        if id(rec.fields) in known_good:
            usable.append(rec)
            continue
        problem = check_layout(rec, dims)
        if problem is None:
            known_good.add(id(rec.fields))
            usable.append(rec)
        else:
            reject(rec.abs_path, problem)

    if max_episodes_per_task is not None:
        by_task: dict[str, list[EpisodeRecord]] = defaultdict(list)
        for rec in usable:
            by_task[rec.task].append(rec)
        keep: set[tuple[str, str]] = set()
        for task, recs in by_task.items():
            ranked = sorted(
                recs, key=lambda r: (unit_hash("cap", split_seed, task, r.episode_id), r.episode_id)
            )
            keep.update((r.task, r.episode_id) for r in ranked[:max_episodes_per_task])
        usable = [r for r in usable if (r.task, r.episode_id) in keep]
    if skipped:
        for s in skipped:
            log.warning("skipping %s: %s", s.path, s.reason)
    return usable, skipped


def split_episodes(
    records: Sequence[EpisodeRecord], *, val_fraction: float, split_seed: int
) -> tuple[list[EpisodeRecord], list[EpisodeRecord]]:
    """Split by episode into (train, val), per task, each in (task, id) order.

    Within each task the episodes are ranked by a hash of (split_seed, task,
    episode_id); the first ``round(val_fraction * n)`` are validation (at least
    one when ``val_fraction > 0`` and the task has two or more episodes). An
    episode's side depends only on its rank, so adding episodes moves few.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), received {val_fraction}")
    by_task: dict[str, list[EpisodeRecord]] = defaultdict(list)
    for rec in records:
        by_task[rec.task].append(rec)
    val_keys: set[tuple[str, str]] = set()
    for task, recs in by_task.items():
        n_val = round(val_fraction * len(recs))
        if val_fraction > 0 and n_val == 0 and len(recs) >= 2:
            n_val = 1
        ranked = sorted(
            recs, key=lambda r: (unit_hash("split", split_seed, task, r.episode_id), r.episode_id)
        )
        val_keys.update((r.task, r.episode_id) for r in ranked[:n_val])
    train = [r for r in records if (r.task, r.episode_id) not in val_keys]
    val = [r for r in records if (r.task, r.episode_id) in val_keys]
    return train, val
