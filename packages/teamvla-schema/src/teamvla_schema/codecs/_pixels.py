"""Decoded PyAV frames to RGB arrays: exact, and fast at the small sizes robot cameras use.

Per-frame ``frame.to_ndarray(format="rgb24")`` builds a new swscale context for
every frame, which at 96x96 costs several times the decoding itself. Here:

* planar RGB (``gbrp``, what the lossless H.264 decoder gives: planes G, B, R)
  is reordered by numpy: no colour conversion at all;
* 4:2:0 frames (what AV1 gives) of a group are stacked into one tall frame and
  converted by one reused swscale context in a single call. That gives each
  frame exactly the pixels of its own conversion when swscale converts without
  filtering between rows of different frames, which :func:`stacking_is_exact`
  checks once per frame size in each process (on random planes, so any vertical
  chroma filtering shows); where it does not hold, frames are converted one by
  one with the reused context;
* anything else is converted one by one with the reused context.

Every path gives the pixels of PyAV's own per-frame conversion (tested).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

#: (width, height) -> whether stacked 4:2:0 conversion equals per-frame conversion.
_STACK_EXACT: dict[tuple[int, int], bool] = {}
_LOCAL = threading.local()
#: Converters inherited through ``fork``: never used or freed again (see :func:`rgb_converter`).
_INHERITED: list[RgbConverter] = []


def rgb_converter(av: Any) -> RgbConverter:
    """This thread's converter in this process.

    Its swscale contexts outlive one stream, since building one costs more than
    converting a group of small frames. They are not shared between threads (the
    writer encodes fields in parallel) nor between processes: a context that ran
    scaling threads in the parent waits for ever for them in a forked DataLoader
    worker (measured: a hang), so a worker builds its own and keeps the inherited
    ones unused (freeing them could wait on those threads too). Contexts are asked
    for one thread, where PyAV allows it, so none has threads to lose.
    """
    conv = getattr(_LOCAL, "converter", None)
    if conv is None or conv.pid != os.getpid():
        if conv is not None:
            _INHERITED.append(conv)
        conv = _LOCAL.converter = RgbConverter(av)
    return conv


def _plane(frame: Any, index: int, rows: int, cols: int) -> np.ndarray:
    plane = frame.planes[index]
    flat = np.frombuffer(plane, np.uint8, count=rows * plane.line_size)
    return flat.reshape(rows, plane.line_size)[:, :cols]  # (rows, cols)


def _yuv420_shapes(w: int, h: int) -> tuple[tuple[int, int], ...]:
    return ((h, w), ((h + 1) // 2, (w + 1) // 2), ((h + 1) // 2, (w + 1) // 2))


class RgbConverter:
    """Converts groups of decoded frames to ``(H, W, 3)`` RGB arrays (see the module docstring)."""

    def __init__(self, av: Any) -> None:
        from av.video.reformatter import VideoReformatter

        self._av = av
        self.pid = os.getpid()
        self._new = VideoReformatter
        self._single = VideoReformatter()
        # One converter per stacked size: a swscale context is rebuilt whenever its size changes.
        self._tall: dict[tuple[int, int, int], Any] = {}
        # One scaling thread per context where PyAV takes ``threads`` (>= 14; older ones use one).
        self._threads: dict[str, int] = {"threads": 1}
        try:
            self._single.reformat(av.VideoFrame(2, 2, "rgb24"), format="yuv420p", **self._threads)
        except TypeError:
            self._threads = {}

    def reformat(self, frame: Any, pix_fmt: str, reformatter: Any = None) -> Any:
        """``frame`` in pixel format ``pix_fmt`` (a new frame), through a kept context."""
        return (reformatter or self._single).reformat(frame, format=pix_fmt, **self._threads)

    def one(self, frame: Any) -> np.ndarray:
        """One frame, converted on its own."""
        if frame.format.name == "gbrp":
            h, w = frame.height, frame.width
            g, b, r = (_plane(frame, i, h, w) for i in range(3))
            return np.stack([r, g, b], axis=-1)  # (H, W, 3)
        return self.reformat(frame, "rgb24").to_ndarray()

    def many(self, frames: Sequence[Any]) -> list[np.ndarray]:
        """The frames of a group, in order; stacked into one conversion where that is exact."""
        if len(frames) > 1 and all(f.format.name == "yuv420p" for f in frames):
            w, h = frames[0].width, frames[0].height
            same = all(f.width == w and f.height == h for f in frames)
            if same and h % 2 == 0 and self.stacking_is_exact(w, h):
                return list(self._stacked(frames, w, h))
        return [self.one(f) for f in frames]

    def _stacked(self, frames: Sequence[Any], w: int, h: int) -> np.ndarray:
        n = len(frames)
        tall = self._av.VideoFrame(w, h * n, "yuv420p")
        for index, (rows, cols) in enumerate(_yuv420_shapes(w, h)):
            dst = _plane(tall, index, rows * n, cols)  # (N * rows, cols), writable
            for i, frame in enumerate(frames):
                dst[i * rows : (i + 1) * rows] = _plane(frame, index, rows, cols)
        key = (w, h, n)
        if key not in self._tall:
            self._tall[key] = self._new()
        rgb = self.reformat(tall, "rgb24", self._tall[key]).to_ndarray()  # (N * H, W, 3)
        return rgb.reshape(n, h, w, 3)  # (N, H, W, 3)

    def stacking_is_exact(self, w: int, h: int) -> bool:
        """Whether this process's swscale converts a stack of ``w`` x ``h`` 4:2:0 frames
        exactly as it converts each frame alone (checked once per size, on random planes)."""
        key = (w, h)
        if key not in _STACK_EXACT:
            rng = np.random.default_rng(0)
            frames = []
            for _ in range(3):
                frame = self._av.VideoFrame(w, h, "yuv420p")
                for index, (rows, cols) in enumerate(_yuv420_shapes(w, h)):
                    _plane(frame, index, rows, cols)[:] = rng.integers(16, 240, (rows, cols))
                frames.append(frame)
            alone = np.stack([self.one(f) for f in frames])
            _STACK_EXACT[key] = bool(np.array_equal(self._stacked(frames, w, h), alone))
        return _STACK_EXACT[key]
