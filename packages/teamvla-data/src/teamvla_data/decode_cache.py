"""A byte-bounded LRU cache of decoded chunks, shared by every process of one dataset's loader.

Why: decoding compressed images costs far more than copying them, and the
DataLoader's workers are separate processes, so a chunk one worker decoded
must be found by the others without being decoded again or pickled through a
queue. The cache is one shared memory file (``memfd``, or an unlinked
temporary file where that does not exist) holding a small table and
``num_slots`` fixed-size slots; worker processes forked from the process that
made it share the mapping, and spawned ones attach to it through
``/proc/<pid>/fd`` (elsewhere they fall back to a private cache, with a warning).

Layout: a header of counters, ``chunk -> slot`` (int32, 0 = absent), and per
slot its chunk, state (free / ready / being written), generation, LRU tick
and writer pid; then the slots, each big enough for the largest chunk.
Chunks differ in size (an episode's last chunk is shorter), so the budget
counts bytes, not slots: the sum of the page-rounded sizes of the chunks held
(or being written) never exceeds ``budget``; the least recently used are
evicted until a new chunk fits. The new chunk is written into the last evicted
slot's pages (faulting in fresh zeroed pages would cost about a fifth of a
lossless decode), and every other page an eviction frees is handed back to the
kernel at once (``MADV_REMOVE``), so the memory in use is that sum. The
slots are only address space until written; the table adds 4 bytes per chunk
and 40 per slot.

Concurrency: one ``fcntl`` record lock on the file (released by the kernel when
a process dies, so a killed worker can never leave it held) plus a thread
lock, held only for table updates, never while decoding or copying. A slot is
claimed (state *writing*, owner pid) under the lock, filled outside it and
then published. Readers copy outside the lock and check afterwards that the
slot's generation did not change (it was not evicted and reused meanwhile);
nothing is pinned, so a process that dies leaks nothing. A waiter for a chunk
another process is writing gives up on that process when it has died, and
decodes privately after :data:`WAIT_SECONDS`: nothing here can hang.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from teamvla_schema.errors import SchemaError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: thread lock only, no worker processes share it
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: Slot states.
FREE, READY, WRITING = 0, 1, 2
#: Header entries (int64).
_MAGIC, _SLOTS, _SLOT_BYTES, _CHUNKS, _TICK = 0, 1, 2, 3, 4
_HITS, _DECODES, _PRIVATE, _EVICTIONS, _WAITS, _RECLAIMED = 5, 6, 7, 8, 9, 10
_HELD, _PEAK = 11, 12  # bytes charged for the chunks held or being written, and their maximum
_HEADER = 16
_MAGIC_VALUE = 0x7EA3_C0DE_CAC4_E001
_PAGE = mmap.PAGESIZE
#: Hands a range of a shared memory file back to the kernel (Linux); elsewhere pages stay.
_REMOVE: int | None = getattr(mmap, "MADV_REMOVE", None)
#: How long a process waits for a chunk another live process is decoding before decoding it itself.
WAIT_SECONDS = 30.0
#: How long the table lock may stay held by another process before that is an error.
LOCK_SECONDS = 30.0

_LIVE: weakref.WeakSet[SharedChunkCache] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A thread of the parent may have held a cache's thread lock at the fork: the child's copy
    # would stay locked forever.
    for cache in list(_LIVE):
        cache._tlock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return True  # no /proc: assume alive (the wait is bounded anyway)


def _new_file(nbytes: int) -> int:
    """A file descriptor of ``nbytes`` of zero-filled shared memory that no name refers to."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("teamvla-decode-cache", getattr(os, "MFD_CLOEXEC", 0))
    else:  # pragma: no cover - macOS: an unlinked temporary file
        with tempfile.TemporaryFile() as fh:
            fd = os.dup(fh.fileno())
    try:
        os.ftruncate(fd, nbytes)
    except OSError:
        os.close(fd)
        raise
    return fd


@dataclass
class CacheCounters:
    """What a cache did, summed over every process using it."""

    hits: int
    decodes: int  #: chunks decoded into the cache
    private: int  #: chunks decoded without caching (no slot free, a lost race, a timeout)
    evictions: int
    waits: int  #: chunks waited for while another process decoded them
    reclaimed: int  #: slots taken back from a process that died while decoding


@dataclass
class Fetched:
    """Chunks made available by :meth:`SharedChunkCache.fetch`.

    ``slots`` maps chunk -> (slot, generation) for chunks read from the cache;
    ``private`` maps chunk -> bytes decoded outside it.
    """

    slots: dict[int, tuple[int, int]] = field(default_factory=dict)
    private: dict[int, np.ndarray] = field(default_factory=dict)


class SharedChunkCache:
    """Chunks ``0 .. len(chunk_bytes)-1`` of the given sizes in at most ``budget`` bytes, LRU, shared across processes.

    Create it in the process that starts the workers (they inherit it).
    :meth:`fetch` makes a set of chunks available, decoding the missing ones
    with a callback; :meth:`changed` tells which of the slots read since were
    reused meanwhile.
    """

    def __init__(
        self, chunk_bytes: np.ndarray | Sequence[int], budget: int, *, unit: int = _PAGE
    ) -> None:
        sizes = np.asarray(chunk_bytes, np.int64)
        if sizes.ndim != 1 or len(sizes) < 1 or sizes.min() < 1 or budget < 0 or unit < 1:
            raise ValueError(
                "one positive size per chunk, a budget >= 0 and a unit >= 1 are required"
            )
        self.budget = int(budget)
        self.num_chunks = len(sizes)
        #: Bytes of one slot: the largest chunk, rounded up to a multiple of ``unit`` (so that
        #: the slots can be viewed as an array of ``unit``-sized records).
        self.slot_bytes = int(-(-sizes.max() // unit) * unit)
        aligned = self.slot_bytes % _PAGE == 0
        #: Bytes each chunk is charged: the pages its data can touch.
        self.charge = (-(-sizes // _PAGE) + (0 if aligned else 1)) * _PAGE
        # Enough slots that the byte budget, not the slot count, is what runs out first
        # (unless every chunk has one), even when the smaller chunks are held.
        small = int(np.quantile(self.charge, 0.1))
        self.num_slots = int(min(self.num_chunks, self.budget // small + 2)) if self.budget else 0
        # Slots that do not start on a page boundary share a page with their neighbour, which
        # an eviction cannot hand back: the budget keeps one page per slot for those.
        self._limit = self.budget - (0 if aligned else (self.num_slots + 1) * _PAGE)
        self._layout()
        self._fd = _new_file(self._total)
        self._owner = os.getpid()
        self._map()
        self._hdr[_MAGIC] = _MAGIC_VALUE
        self._hdr[_SLOTS], self._hdr[_SLOT_BYTES] = self.num_slots, self.slot_bytes
        self._hdr[_CHUNKS] = self.num_chunks

    # ------------------------------------------------------------------ memory

    def _layout(self) -> None:
        c, s = self.num_chunks, self.num_slots
        self._off_chunk = _HEADER * 8
        self._off_slots = self._off_chunk + -(-c * 4 // 8) * 8
        self._off_data = -(-(self._off_slots + 5 * 8 * s) // _PAGE) * _PAGE
        self._total = self._off_data + s * self.slot_bytes

    def _map(self) -> None:
        self._mm = mmap.mmap(self._fd, self._total, mmap.MAP_SHARED)
        buf = np.frombuffer(self._mm, np.uint8)
        self._hdr = buf[: _HEADER * 8].view(np.int64)
        self._chunk_slot = buf[self._off_chunk : self._off_chunk + self.num_chunks * 4].view(
            np.int32
        )
        table = buf[self._off_slots : self._off_slots + 5 * 8 * self.num_slots].view(np.int64)
        table = table.reshape(5, self.num_slots)
        self._slot_chunk, self._state, self._gen, self._tick, self._writer = table
        #: The slots, ``(num_slots, slot_bytes)`` uint8.
        self.data = buf[self._off_data :].reshape(self.num_slots, self.slot_bytes)
        self._tlock = threading.Lock()
        weakref.finalize(self, _close_quietly, self._fd)
        _LIVE.add(self)

    def __getstate__(self) -> dict[str, Any]:
        # Spawned workers attach to the same memory through /proc; nothing of it is copied.
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        return {**state, "_limit": self._limit, "owner": self._owner, "fd": self._fd}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._owner = state.pop("owner")
        fd = state.pop("fd")
        self.__dict__.update(state)
        self._layout()
        try:
            self._fd = os.open(f"/proc/{self._owner}/fd/{fd}", os.O_RDWR)
            shared = os.fstat(self._fd).st_size == self._total
        except OSError:
            shared = False
        if not shared:
            log.warning(
                "cannot attach to the decode cache of process %s (no /proc?); "
                "this process keeps a private one (start workers with fork to share it)",
                self._owner,
            )
            self._fd = _new_file(self._total)
        self._map()
        if not shared:
            self._hdr[_MAGIC] = _MAGIC_VALUE

    @property
    def fd(self) -> int:
        """This process's descriptor of the shared memory file (for ``os.preadv`` of the slots)."""
        return self._fd

    @property
    def data_offset(self) -> int:
        """Where the slots start in the shared memory file."""
        return self._off_data

    @property
    def usable_bytes(self) -> int:
        """Bytes chunks may be charged at once (the budget, less a page per slot when slots are not page-aligned)."""
        return max(self._limit, 0)

    @property
    def held_bytes(self) -> int:
        """Bytes charged now for the chunks held or being written (never above :attr:`budget`)."""
        return int(self._hdr[_HELD])

    @property
    def peak_bytes(self) -> int:
        """The most bytes ever charged at once."""
        return int(self._hdr[_PEAK])

    def _forget(self, slot: int, release: bool = True) -> None:
        """Under the lock: empty ``slot`` and (unless ``release`` is false) give its pages back."""
        chunk = int(self._slot_chunk[slot]) - 1
        if chunk >= 0:
            self._chunk_slot[chunk] = 0
            self._hdr[_HELD] -= self.charge[chunk]
        self._slot_chunk[slot], self._state[slot], self._tick[slot] = 0, FREE, 0
        if release:
            self._release(slot)

    def _release(self, slot: int, keep: int = 0) -> None:
        """Give the kernel back the whole pages of ``slot`` past its first ``keep`` bytes."""
        if _REMOVE is None:
            return
        start = self._off_data + slot * self.slot_bytes  # whole pages only (see _limit)
        first = -(-(start + keep) // _PAGE) * _PAGE
        last = (start + self.slot_bytes) // _PAGE * _PAGE
        if last > first:
            with contextlib.suppress(OSError, ValueError):
                self._mm.madvise(_REMOVE, first, last - first)

    # ------------------------------------------------------------------ locking

    @contextlib.contextmanager
    def _locked(self) -> Any:
        with self._tlock:
            if fcntl is None:  # pragma: no cover
                yield
                return
            deadline = None
            delay = 2e-5
            while True:
                try:
                    fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                now = time.monotonic()
                deadline = deadline or now + LOCK_SECONDS
                if now > deadline:
                    raise SchemaError(
                        f"the decode cache table stayed locked by another process for "
                        f"{LOCK_SECONDS:.0f} s (a stopped worker?)"
                    )
                time.sleep(delay)
                delay = min(2 * delay, 1e-3)
            try:
                yield
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, 0)

    # ------------------------------------------------------------------ the protocol

    def _next_tick(self) -> int:
        self._hdr[_TICK] += 1
        return int(self._hdr[_TICK])

    def _claim(self, chunk: int, protected: set[int]) -> tuple[int, int] | None:
        """Take a free slot for ``chunk``, evicting least recently used chunks until it fits the budget.

        Slots being written by live processes, and ``protected`` ones (read by
        the same batch), are never evicted; None when the chunk cannot fit.
        """
        need = int(self.charge[chunk])
        if need > self._limit:
            return None
        for s in np.flatnonzero(self._state == WRITING).tolist():
            if not _alive(int(self._writer[s])):  # its writer died mid-decode: take it back
                self._hdr[_RECLAIMED] += 1
                self._forget(s)
        top = np.iinfo(np.int64).max
        evicted: list[int] = []  # slots emptied for this chunk, their pages still in place
        while True:
            free = self._state == FREE
            if self._hdr[_HELD] + need <= self._limit and free.any():
                break
            ticks = np.where(self._state == READY, self._tick, top)
            if protected:
                ticks[list(protected)] = top
            victim = int(np.argmin(ticks))
            if ticks[victim] == top:
                for s in evicted:
                    self._release(s)
                return None
            self._hdr[_EVICTIONS] += 1
            self._forget(victim, release=False)
            evicted.append(victim)
        if evicted:
            # Write into the last victim's pages: handing them back and faulting fresh zeroed
            # pages in again cost about a fifth of a lossless decode. Only the pages past the
            # new chunk's size go back, so memory in use stays the bytes charged.
            slot = evicted.pop()
            for s in evicted:
                self._release(s)
            self._release(slot, keep=need)
        else:
            slot = int(np.argmax(free))
        self._hdr[_HELD] += need
        self._hdr[_PEAK] = max(int(self._hdr[_PEAK]), int(self._hdr[_HELD]))
        self._slot_chunk[slot] = chunk + 1
        self._chunk_slot[chunk] = slot + 1
        self._state[slot] = WRITING
        self._writer[slot] = os.getpid()
        self._gen[slot] += 1
        self._tick[slot] = self._next_tick()
        return slot, int(self._gen[slot])

    def _scan(
        self, chunks: Iterable[int], out: Fetched, claims: list[tuple[int, int, int]]
    ) -> list[int]:
        """Under the lock: record hits, claim slots for missing chunks; return chunks others are writing.

        Missing chunks for which no slot can be had are marked for a private
        decode (an empty array in ``out.private``).
        """
        waiting = []
        missing = []
        wanted = np.asarray(list(chunks), np.int64)
        slots = self._chunk_slot[wanted].astype(np.int64) - 1
        ready = slots >= 0
        ready[ready] = self._state[slots[ready]] == READY
        if ready.any():  # the common case, in one go: record the hits, most recent last
            hit_chunks, hit_slots = wanted[ready], slots[ready]
            tick = int(self._hdr[_TICK])
            self._tick[hit_slots] = tick + 1 + np.arange(len(hit_slots))
            self._hdr[_TICK] = tick + len(hit_slots)
            self._hdr[_HITS] += len(hit_slots)
            gens = self._gen[hit_slots].tolist()
            out.slots.update(
                zip(hit_chunks.tolist(), zip(hit_slots.tolist(), gens, strict=True), strict=True)
            )
        for chunk, slot in zip(wanted[~ready].tolist(), slots[~ready].tolist(), strict=True):
            if slot < 0:
                missing.append(chunk)
            elif _alive(int(self._writer[slot])):
                waiting.append(chunk)
            else:  # its writer died mid-decode: forget the half-written slot
                self._hdr[_RECLAIMED] += 1
                self._forget(slot)
                missing.append(chunk)
        protected = {s for s, _ in out.slots.values()} | {s for _, s, _ in claims}
        for chunk in missing:
            got = self._claim(chunk, protected)
            if got is None:
                out.private[chunk] = np.empty(0, np.uint8)
            else:
                claims.append((chunk, *got))
                protected.add(got[0])
        return waiting

    def _fill(
        self,
        claims: list[tuple[int, int, int]],
        out: Fetched,
        decode: Callable[[int, np.ndarray], None],
    ) -> None:
        """Decode claimed chunks into their slots and marked ones privately, then publish the slots."""
        private = [c for c, buf in out.private.items() if buf.size == 0]
        try:
            for chunk, slot, _ in claims:
                decode(chunk, self.data[slot])
            for chunk in private:
                buf = np.empty(self.slot_bytes, np.uint8)
                decode(chunk, buf)
                out.private[chunk] = buf
        except BaseException:
            with self._locked():
                for chunk, slot, gen in claims:
                    if self._gen[slot] == gen and self._slot_chunk[slot] == chunk + 1:
                        self._forget(slot)
            raise
        if not claims and not private:
            return
        with self._locked():
            self._hdr[_PRIVATE] += len(private)
            for chunk, slot, gen in claims:
                if self._gen[slot] == gen and self._slot_chunk[slot] == chunk + 1:
                    self._state[slot] = READY
                    self._hdr[_DECODES] += 1
                    out.slots[chunk] = (slot, gen)
                else:  # pragma: no cover - taken back from us meanwhile: keep what we wrote
                    out.private[chunk] = self.data[slot].copy()

    def fetch(self, chunks: Iterable[int], decode: Callable[[int, np.ndarray], None]) -> Fetched:
        """Make ``chunks`` available: cached ones are found, missing ones decoded by ``decode``.

        ``decode(chunk, dest)`` fills the uint8 array ``dest`` of ``slot_bytes``
        (a slot, or private memory when no slot can be had). Chunks another
        process is decoding are waited for (at most :data:`WAIT_SECONDS`, and
        never for a process that died), after decoding our own. An exception
        from ``decode`` frees the slots it claimed and propagates.
        """
        out = Fetched()
        claims: list[tuple[int, int, int]] = []
        with self._locked():
            waiting = self._scan(sorted(set(chunks)), out, claims)
            if waiting:
                self._hdr[_WAITS] += len(waiting)
        self._fill(claims, out, decode)
        deadline = time.monotonic() + WAIT_SECONDS
        delay = 2e-4
        while waiting:
            time.sleep(delay)
            delay = min(2 * delay, 5e-3)
            claims = []
            with self._locked():
                waiting = self._scan(waiting, out, claims)
                if waiting and time.monotonic() > deadline:
                    for chunk in waiting:  # decode it ourselves rather than wait any longer
                        out.private[chunk] = np.empty(0, np.uint8)
                    waiting = []
            self._fill(claims, out, decode)
        return out

    def changed(self, used: Iterable[tuple[int, tuple[int, int]]]) -> list[int]:
        """Chunks among ``used`` ((chunk, (slot, generation)) pairs) whose slot was reused since."""
        pairs = list(used)
        if not pairs:
            return []
        chunks = np.array([c for c, _ in pairs], np.int64)
        slots = np.array([s for _, (s, _) in pairs], np.int64)
        gens = np.array([g for _, (_, g) in pairs], np.int64)
        with self._locked():
            moved = (self._gen[slots] != gens) | (self._slot_chunk[slots] != chunks + 1)
        return chunks[moved].tolist()

    def resident(self) -> np.ndarray:
        """The chunks currently held (ready), ascending."""
        with self._locked():
            ready = self._state == READY
            return np.sort(self._slot_chunk[ready] - 1)

    def counters(self) -> CacheCounters:
        """Hits, decodes, evictions... summed over every process sharing the cache."""
        h = self._hdr
        return CacheCounters(
            int(h[_HITS]),
            int(h[_DECODES]),
            int(h[_PRIVATE]),
            int(h[_EVICTIONS]),
            int(h[_WAITS]),
            int(h[_RECLAIMED]),
        )

    def clear(self) -> None:
        """Forget every chunk (slots being written by live processes are left to them)."""
        with self._locked():
            for s in range(self.num_slots):
                if self._state[s] == WRITING and _alive(int(self._writer[s])):
                    continue
                self._forget(s)


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def chunk_pairs(fetched: Fetched, chunks: Sequence[int]) -> list[tuple[int, tuple[int, int]]]:
    """(chunk, (slot, generation)) of the cached ones among ``chunks``, for :meth:`SharedChunkCache.changed`."""
    return [(c, fetched.slots[c]) for c in chunks if c in fetched.slots]
