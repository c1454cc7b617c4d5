"""Where a file's codec streams lie, remembered per file version, so that repeated range
reads skip re-parsing the zip directory, the metadata and the member headers.

A loader reads a few frames of the same episode files again and again (each
chunk of each camera, every epoch). Parsing an episode's zip directory, its
JSON metadata and the member's ``.npy`` header cost about as much as decoding
30 frames of a 96x96 camera, so :func:`teamvla_schema.episode.read_frames`
keeps what it checked: the episode's header and the byte range of a stored
stream member. An entry is keyed by the file's device and inode and used only
while the open file still has the size, ``mtime_ns`` and ``ctime_ns`` it had
when it was parsed (a file replaced by a writer's atomic rename is another
inode; one written in place changes ``mtime_ns``), the same identity a dataset
manifest records. The streams also check a CRC-32 per group as it is read.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

#: Entries kept (one per file and field); the least recently used go first.
MAX_ENTRIES = 4096

_Identity = tuple[int, int, int]
_Entry = tuple[_Identity, Any, tuple[int, int]]


class StreamPlaces:
    """A thread-safe LRU of ``(header, (offset, size))`` per ``(file version, field)``."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[int, int, str], _Entry] = OrderedDict()
        self._lock = threading.Lock()
        # A lock held by another thread at fork() would stay held in the child for ever.
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    @staticmethod
    def _key(st: os.stat_result, field: str) -> tuple[tuple[int, int, str], _Identity]:
        return (st.st_dev, st.st_ino, field), (st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def get(self, st: os.stat_result, field: str) -> tuple[Any, tuple[int, int]] | None:
        """The header and stream range stored for this version of the file, or ``None``."""
        key, identity = self._key(st, field)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] != identity:  # the file changed since: parse it again
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1], entry[2]

    def put(self, st: os.stat_result, field: str, header: Any, place: tuple[int, int]) -> None:
        """Remember ``header`` and the stream's ``(offset, size)`` for this version of the file."""
        key, identity = self._key(st, field)
        with self._lock:
            self._entries[key] = (identity, header, place)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
