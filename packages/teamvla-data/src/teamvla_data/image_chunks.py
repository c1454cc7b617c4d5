"""Camera frames decoded on demand, a chunk at a time, into a byte-bounded cache shared by the workers.

With ``cache_max_bytes`` set, the dataset keeps no uncompressed copy of the
images: each episode's frames are cut into *chunks* of ``steps`` consecutive
steps (both cameras), decoded from the episode file when a batch first needs
them and kept in a :class:`~teamvla_data.decode_cache.SharedChunkCache` of
fixed-size slots, least recently used first out.

* **Chunk size.** When the budget holds every episode whole, a chunk is a
  whole episode and nothing is ever evicted. Otherwise chunks are made small
  enough that at least :data:`TARGET_CHUNKS` fit (so the sampler can mix that
  many), each episode cut into equal blocks; a chunk's slot also keeps the
  ``overlap`` (= observation history) frames just before its block, so that
  every sample's observation window lies in the chunk of its current step.
  For image streams (``image_codec``), whose decoding starts at the keyframe
  at or before a chunk's first frame, blocks are whole GOPs instead, each
  boundary ``overlap`` steps past a keyframe, so every chunk starts on one
  (:func:`keyframe_interval`, read from the first episode).
* **Reading.** A chunk is read with :func:`teamvla_data.episode_reads.read_frame_range`:
  the file must still be the version the manifest describes, and only the
  needed frames are decoded where the episode format allows random access.
* **Bounded.** The chunks held never take more than ``cache_max_bytes``
  (page-rounded); a chunk that cannot fit (a tiny budget, every other chunk in
  use by the same batch) is decoded into private memory for the batch and dropped.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from teamvla_schema.episode import read_episode_meta
from teamvla_schema.errors import SchemaError

from teamvla_data.cache_order import spare_slots
from teamvla_data.column_files import IMAGE_COLUMNS
from teamvla_data.decode_cache import SharedChunkCache, chunk_pairs
from teamvla_data.episode_reads import read_frame_range
from teamvla_data.manifest import EpisodeRecord

#: The budget is cut into chunks small enough that at least this many fit.
TARGET_CHUNKS = 16
#: The smallest chunk, in steps.
MIN_CHUNK_STEPS = 8
_PAGE = 4096


@dataclass(frozen=True)
class ChunkPlan:
    """How episodes are cut into chunks."""

    steps: int  #: the longest block of steps per chunk (episodes are cut into equal blocks)
    overlap: int  #: frames before a chunk's first step kept with it (observation history)
    frame_bytes: int  #: one step of every camera


def plan_chunks(lengths: np.ndarray, frame_bytes: int, budget: int, history: int) -> ChunkPlan:
    """Chunk size for episodes of ``lengths`` steps in ``budget`` bytes (see the module docstring)."""
    lengths = np.asarray(lengths, np.int64)
    longest = int(lengths.max())
    if budget >= int((-(-lengths * frame_bytes // _PAGE) * _PAGE).sum()):
        return ChunkPlan(longest, 0, frame_bytes)
    steps = int(
        min(longest, max(MIN_CHUNK_STEPS, budget // (TARGET_CHUNKS * frame_bytes) - history))
    )
    return ChunkPlan(steps, history if longest > steps else 0, frame_bytes)


def keyframe_interval(record: EpisodeRecord, fields: Sequence[str]) -> int | None:
    """The keyframe interval (``gop``) of ``record``'s image streams, if they share one.

    Read from the first episode only, as a layout hint for the chunks: episodes
    stored otherwise decode as correctly, with a few frames decoded in vain.
    """
    try:
        encodings = read_episode_meta(record.abs_path).encodings
    except (OSError, SchemaError):
        return None
    gops = {getattr(encodings.get(name), "params", {}).get("gop") for name in fields}
    gop = gops.pop() if len(gops) == 1 else None
    return gop if isinstance(gop, int) and not isinstance(gop, bool) and gop > 0 else None


class DecodedImages:
    """The camera fields of a dataset's episodes (in dataset order), decoded on demand.

    ``take`` fills a batch's images; ``sample_chunks`` tells the sampler which
    chunk each sample reads. Create it in the process that starts the loader's
    workers, so that they share its cache.
    """

    def __init__(
        self,
        records: Sequence[EpisodeRecord],
        budget: int,
        history: int,
        fields: Sequence[str] = IMAGE_COLUMNS,
    ) -> None:
        self.records = list(records)
        self.fields = tuple(fields)
        lay = self.records[0].fields[self.fields[0]]
        self.frame_shape = tuple(int(d) for d in lay.shape)
        frame = int(np.prod(self.frame_shape))
        self.lengths = np.array([r.num_steps for r in self.records], np.int64)
        self.plan = plan_chunks(self.lengths, frame * len(self.fields), int(budget), history)
        gop = keyframe_interval(self.records[0], self.fields)
        if gop and self.plan.overlap and self.plan.steps >= gop:
            # Image streams decode from the keyframe at or before a chunk's first frame: blocks
            # of whole GOPs, each boundary ``overlap`` steps past a keyframe, make every chunk's
            # first frame a keyframe, so nothing is decoded in vain.
            self.shift = self.plan.overlap
            # As many blocks per episode as equal blocks would take (so chunks stay about equal
            # in size, which the sampler's lanes assume), each rounded to whole GOPs.
            longest = int(self.lengths.max())
            equal = -(-longest // -(-longest // self.plan.steps))
            whole_gops = min(max(round(equal / gop), 1), self.plan.steps // gop) * gop
            per_episode = np.maximum(1, -(-(self.lengths - self.shift) // whole_gops))
            self.block = np.full(len(self.lengths), whole_gops, np.int64)
        else:
            self.shift = 0
            per_episode = -(-self.lengths // self.plan.steps)
            #: Steps per block of each episode (equal blocks, the last one possibly shorter).
            self.block = -(-self.lengths // per_episode)
        self.per_episode = per_episode
        self.first_chunk = np.concatenate([[0], np.cumsum(per_episode)]).astype(np.int64)
        self.num_chunks = int(self.first_chunk[-1])
        self.chunk_episode = np.repeat(np.arange(len(self.records)), per_episode)
        chunks = np.arange(self.num_chunks)
        self._start = self._chunk_start(chunks)
        block = chunks - self.first_chunk[self.chunk_episode]
        stop = np.minimum(
            (block + 1) * self.block[self.chunk_episode] + self.shift,
            self.lengths[self.chunk_episode],
        )
        self._stop = stop
        self.slot_frames = int((stop - self._start).max())
        # Slots hold whole frames, so that all of them can be read as one array of frames; and
        # whole pages where that costs little, so that evictions hand all their memory back.
        unit = math.lcm(self.plan.frame_bytes, _PAGE)
        self.cache = SharedChunkCache(
            (stop - self._start) * self.plan.frame_bytes,
            int(budget),
            unit=unit if unit <= 8 * self.plan.frame_bytes else self.plan.frame_bytes,
        )
        self.budget = int(budget)

    @property
    def decoded_bytes(self) -> int:
        """Bytes of every frame of every camera, decoded."""
        return int(self.lengths.sum()) * self.plan.frame_bytes

    @property
    def whole_bytes(self) -> int:
        """The smallest budget that holds every episode at once (page-rounded decoded size)."""
        return int((-(-self.lengths * self.plan.frame_bytes // _PAGE) * _PAGE).sum())

    @property
    def holds_everything(self) -> bool:
        """Whether every chunk fits at once (nothing is ever evicted)."""
        return int(self.cache.charge.sum()) <= self.cache.usable_bytes

    def summary(self) -> str:
        """One line: chunks, budget, what holds everything."""
        return (
            f"images decoded on demand: {self.num_chunks} chunks of up to {self.plan.steps} steps "
            f"(+{self.plan.overlap} history), budget {self.budget / 2**20:.1f} MiB of "
            f"{self.whole_bytes / 2**20:.1f} MiB decoded"
            + (" (holds everything)" if self.holds_everything else "")
        )

    @property
    def mean_chunk_bytes(self) -> float:
        """Average bytes a chunk is charged (page-rounded)."""
        return float(self.cache.charge.mean())

    def resident_chunks(self, batch_size: int) -> int:
        """How many chunks the sampler may keep in use at once: what fits, less spare slots."""
        # As many of the largest chunks as fit: chunks of unequal sizes must never make the
        # lanes outgrow the cache (they would evict each other and decode several times).
        largest = np.sort(self.cache.charge)[::-1]
        fit = int(np.searchsorted(np.cumsum(largest), self.cache.usable_bytes, side="right"))
        steps = max(1, round(float(self.lengths.sum()) / self.num_chunks))
        return fit - spare_slots(fit, steps, batch_size)

    def chunk_of(self, episodes: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """Chunk of step ``steps`` of episode ``episodes`` (arrays of equal shape)."""
        block = (np.asarray(steps) - self.shift) // self.block[episodes]
        return self.first_chunk[episodes] + np.clip(block, 0, self.per_episode[episodes] - 1)

    def sample_chunks(self, offsets: np.ndarray) -> np.ndarray:
        """Chunk of every sample, given the dataset's episode offsets (``len(records) + 1``)."""
        ep = np.repeat(np.arange(len(self.records)), self.lengths)
        t = np.arange(int(offsets[-1]), dtype=np.int64) - np.asarray(offsets, np.int64)[ep]
        return self.chunk_of(ep, t)

    def _chunk_start(self, chunk: np.ndarray) -> np.ndarray:
        """First step held in a chunk's slot (its block start minus the overlap, from step 0 on)."""
        episode = self.chunk_episode[chunk]
        block = chunk - self.first_chunk[episode]
        return np.where(block > 0, block * self.block[episode] + self.shift - self.plan.overlap, 0)

    def _decode(self, chunk: int, dest: np.ndarray) -> None:
        rec = self.records[int(self.chunk_episode[chunk])]
        start, stop = int(self._start[chunk]), int(self._stop[chunk])
        need = (stop - start) * self.plan.frame_bytes
        # Camera after camera: each camera's frames are contiguous rows (see _copy); the
        # frames are decoded straight into the slot (a file holding frames of another
        # dtype or size raises a SchemaError naming it, the field and the step).
        view = dest[:need].reshape(len(self.fields), stop - start, *self.frame_shape)
        read_frame_range(
            rec,
            self.fields,
            start,
            stop,
            into={name: view[k] for k, name in enumerate(self.fields)},
        )

    def take(
        self, episodes: np.ndarray, current: np.ndarray, steps: np.ndarray, out: np.ndarray
    ) -> np.ndarray:
        """Fill ``out`` (cameras, B, To, H, W, 3) with the frames ``steps`` (B, To) of ``episodes`` (B,).

        ``current`` (B,) is each sample's current step: its chunk holds the
        whole observation window.
        """
        chunks = self.chunk_of(episodes, current)
        local = steps - self._start[chunks][:, None]
        wanted = np.unique(chunks).tolist()
        fetched = self.cache.fetch(wanted, self._decode)
        self._copy(chunks, local, fetched.slots, fetched.private, out)
        stale = self.cache.changed(chunk_pairs(fetched, wanted))
        if stale:  # evicted and reused while we copied: decode those again, privately
            redo = {}
            for chunk in stale:
                buf = np.empty(self.cache.slot_bytes, np.uint8)
                self._decode(chunk, buf)
                redo[chunk] = buf
            self._copy(chunks, local, {}, redo, out, only=set(stale))
        return out

    def _read_rows(self, rows: np.ndarray, row: int, dest: np.ndarray) -> None:
        """``dest[i] = arena row rows[i]``: ``preadv`` of the shared file, one call per run of
        consecutive rows (a sample's history frames), straight into the batch. The kernel's
        copy from the shared pages is about twice as fast as ``np.take`` through the mapping."""
        if not hasattr(os, "preadv"):  # pragma: no cover - no preadv: copy through the mapping
            np.take(self.cache.data.reshape(-1, row), rows, axis=0, out=dest)
            return
        n = len(rows)
        new_run = np.ones(n, bool)
        new_run[1:] = rows[1:] != rows[:-1] + 1
        starts = np.flatnonzero(new_run)
        ends = np.append(starts[1:], n)
        fd, offset = self.cache.fd, self.cache.data_offset
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            got = os.preadv(fd, [dest[a:b].data], offset + int(rows[a]) * row)
            if got != (b - a) * row:  # pragma: no cover - the file is ours and sized at creation
                raise SchemaError(f"decode cache read {got} of {(b - a) * row} bytes")

    def _copy(
        self,
        chunks: np.ndarray,
        local: np.ndarray,
        slots: dict[int, tuple[int, int]],
        private: dict[int, np.ndarray],
        out: np.ndarray,
        only: set[int] | None = None,
    ) -> None:
        cams = len(self.fields)
        row = self.plan.frame_bytes // cams  # one camera's frame: a row of the arena
        per_slot = self.cache.slot_bytes // row  # slots are whole frames
        frames = self._stop[chunks] - self._start[chunks]  # frames of each sample's chunk
        if slots and only is None:
            # Rows of camera k: slot * per_slot + k * frames + local (camera after camera per
            # slot); one contiguous take per camera, straight into the batch.
            uniq, inverse = np.unique(chunks, return_inverse=True)
            slot_of = np.array([slots.get(c, (0, 0))[0] for c in uniq.tolist()], np.int64)
            base = slot_of[inverse.reshape(-1)][:, None] * per_slot + local
            for k in range(cams):
                idx = (base + k * frames[:, None]).reshape(-1)
                self._read_rows(idx, row, out[k].reshape(len(idx), row))
        for chunk, buf in private.items():
            if only is not None and chunk not in only:
                continue
            sel = np.flatnonzero(chunks == chunk)
            n = int(frames[sel[0]])
            view = buf[: n * cams * row].reshape(cams, n, *self.frame_shape)
            for k in range(cams):
                out[k][sel] = view[k][local[sel]]
