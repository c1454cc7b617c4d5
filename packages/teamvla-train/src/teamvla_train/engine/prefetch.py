"""Load the next batches in a background thread while the current step computes.

With ``dataset.num_workers: 0`` (the right choice on a 2-core machine, where
worker processes would take a core from the model) the loader runs in the
training process and its time adds to every step. torch and numpy release the
GIL in their heavy loops, so a single background thread overlaps the batch
gathers with the step's compute. The batches come out in the iterator's order,
so training stays deterministic.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

_END = object()


class Prefetcher:
    """Iterate ``source`` ``depth`` items ahead in a daemon thread; same items, same order."""

    def __init__(self, source: Iterator[Any], depth: int = 2) -> None:
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(source,), daemon=True, name="teamvla-prefetch"
        )
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, source: Iterator[Any]) -> None:
        try:
            for item in source:
                if not self._put((True, item)):
                    return
        except BaseException as exc:  # re-raised in the consumer's thread
            self._put((False, exc))
            return
        self._put((True, _END))

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Any:
        ok, item = self._queue.get()
        if not ok:
            raise item
        if item is _END:
            self._queue.put((True, _END))  # stay exhausted
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the thread (the source is left where it is)."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5)

    def __del__(self) -> None:
        self._stop.set()
