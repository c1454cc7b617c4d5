"""Camera frames in and out of other formats: MP4 video through PyAV (FFmpeg's
libraries, bundled in PyAV's wheels, so no system FFmpeg is needed) and PNG
through Pillow."""

from __future__ import annotations

import io
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from teamvla_schema.errors import SchemaError

from teamvla_data.interop._deps import available, require

#: The encoder an export uses, and its settings (LeRobot's own defaults are AV1, yuv420p,
#: g=2, crf=30). Full-resolution chroma (yuv444p): robot camera images are small, and
#: 4:2:0 subsampling alone costs ~10 dB of PSNR on them. ``lossless``: H.264 in RGB at
#: crf 0 (libx264rgb), bit-exact.
VIDEO_CODEC = "libx264"
VIDEO_PIX_FMT = "yuv444p"
LOSSLESS_CODEC = "libx264rgb"
LOSSLESS_PIX_FMT = "rgb24"
VIDEO_GOP = 2
DEFAULT_CRF = 18


def video_encoder_available(codec: str = VIDEO_CODEC) -> bool:
    """Whether PyAV is installed and its FFmpeg build has ``codec``'s encoder."""
    if not available("av"):
        return False
    av = require("av", "video export")
    try:
        av.codec.Codec(codec, "w")
    except Exception:  # PyAV raises its own error classes for unknown codecs
        return False
    return True


def _reformatter() -> Any:
    """A pixel-format converter that keeps its FFmpeg (swscale) context between frames:
    the same pixels as ``frame.to_ndarray(format=...)``, an order of magnitude faster."""
    from av.video.reformatter import VideoReformatter

    require("av", "video")
    return VideoReformatter()


def encode_video(
    path: Path, frames: np.ndarray, fps: float, *, crf: int = DEFAULT_CRF, lossless: bool = False
) -> dict[str, Any]:
    """Write ``frames`` (``uint8 [T, H, W, 3]``) as an H.264 MP4 whose frame ``t`` is at ``t / fps``.

    Returns LeRobot's ``info`` entry for the stream (codec, pixel format, size, fps).
    """
    av = require("av", "video export")
    t, h, w, _ = frames.shape
    rate = Fraction(fps).limit_denominator(1001)
    codec, pix_fmt = (
        (LOSSLESS_CODEC, LOSSLESS_PIX_FMT) if lossless else (VIDEO_CODEC, VIDEO_PIX_FMT)
    )
    options = {"crf": "0" if lossless else str(crf), "g": str(VIDEO_GOP)}
    reformat = _reformatter()
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.codec_context.time_base = Fraction(1) / rate
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
            frame = reformat.reformat(frame, format=pix_fmt)
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with av.open(str(path), "r") as written:  # libx264rgb stores planar RGB (gbrp)
        stored_fmt = written.streams.video[0].codec_context.pix_fmt
    return {
        "video.height": h,
        "video.width": w,
        "video.codec": "h264",
        "video.pix_fmt": stored_fmt,
        "video.is_depth_map": False,
        "video.fps": int(fps) if float(fps).is_integer() else float(fps),
        "video.channels": 3,
        "has_audio": False,
    }


class VideoReader:
    """Frames of one video file by timestamp, decoded front to back (no seeking).

    Episodes stored one after another in one file are read in order with one
    pass; asking for an earlier time reopens the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._container: Any = None
        self._frames: Any = None
        self._last: tuple[float, np.ndarray] | None = None
        self._reformat = _reformatter()

    def _open(self) -> None:
        av = require("av", "reading LeRobot videos")
        self.close()
        try:
            self._container = av.open(str(self.path), "r")
            stream = self._container.streams.video[0]
        except (OSError, IndexError, av.error.FFmpegError) as exc:
            raise SchemaError(f"cannot read video: {exc}", path=self.path) from None
        self._frames = self._container.decode(stream)
        self._last = None

    def close(self) -> None:
        """Release the file."""
        if self._container is not None:
            self._container.close()
        self._container = self._frames = self._last = None

    def _next(self) -> tuple[float, np.ndarray] | None:
        av = require("av", "reading LeRobot videos")
        try:
            frame = next(self._frames)
        except StopIteration:
            return None
        except av.error.FFmpegError as exc:
            raise SchemaError(f"corrupt video: {exc}", path=self.path) from None
        return float(frame.time), self._reformat.reformat(frame, format="rgb24").to_ndarray()

    def frames_at(self, times: np.ndarray, tolerance: float, field: str) -> np.ndarray:
        """The frame nearest each time in ``times`` (ascending, seconds), within ``tolerance``."""
        if self._frames is None or (
            self._last is not None and self._last[0] > times[0] + tolerance
        ):
            self._open()
        out: list[np.ndarray] = []
        for i, want in enumerate(times):
            best = self._last
            while best is None or best[0] < want - tolerance:
                best = self._next()
                if best is None:
                    raise SchemaError(
                        f"video ends before frame {i} (t = {want:.4f} s)",
                        path=self.path,
                        field=field,
                    )
                self._last = best
            if abs(best[0] - want) > tolerance:
                raise SchemaError(
                    f"no frame within {tolerance:.4f} s of t = {want:.4f} s (nearest {best[0]:.4f} s)",
                    path=self.path,
                    field=field,
                    step=i,
                )
            out.append(best[1])
        return np.stack(out)


def decode_all(path: Path) -> np.ndarray:
    """Every frame of a video file, ``uint8 [T, H, W, 3]``."""
    av = require("av", "reading videos")
    with av.open(str(path), "r") as container:
        reformat = _reformatter()
        return np.stack(
            [reformat.reformat(f, format="rgb24").to_ndarray() for f in container.decode(video=0)]
        )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 image stacks in dB (``inf`` when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def encode_png(img: np.ndarray, level: int) -> bytes:
    """PNG bytes of a uint8 ``[H, W]`` or ``[H, W, 3|4]`` image."""
    image_mod = require("PIL.Image", "PNG images")
    buf = io.BytesIO()
    image_mod.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def decode_png(data: bytes, where: str, field: str, step: int) -> np.ndarray:
    """Decode an embedded image (PNG or any format Pillow reads) into a uint8 array."""
    image_mod = require("PIL.Image", "reading LeRobot images")
    try:
        with image_mod.open(io.BytesIO(data)) as img:
            if img.mode not in ("RGB", "L", "RGBA"):
                img = img.convert("RGB")
            arr = np.asarray(img)
    except (OSError, ValueError, image_mod.DecompressionBombError) as exc:
        raise SchemaError(
            f"cannot decode image: {exc}", path=where, field=field, step=step
        ) from None
    if arr.dtype != np.uint8:
        raise SchemaError(
            f"expected an 8-bit image, received {arr.dtype}", path=where, field=field, step=step
        )
    return arr
