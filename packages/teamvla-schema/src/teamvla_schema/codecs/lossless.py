"""Lossless codec: temporal prediction plus zstd (``codecs._predictive``, ``_predictive_stream``).

Each frame is predicted from the frames before it (the previous frame, or a
running average that averages sensor noise out, chosen per 8x8 block; a global
sub-pixel shift for a panning camera), which per-frame PNG cannot do. On the
camera-like benchmark set it stores about 0.77x the bytes of per-frame PNG and
decodes about 8x faster than x264's lossless mode (docs/storage.md). A keyframe
every ``gop`` frames bounds the cost of random access. It needs numpy and
``zstandard`` (``pip install "teamvla-schema[video]"``), not PyAV.

Streams written by teamvla-schema 0.1.0 (H.264 in its lossless RGB mode through
PyAV, recorded with ``{"gop", "preset"}`` parameters) still decode, with PyAV.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from teamvla_schema.codecs import _predictive_stream as _predictive
from teamvla_schema.codecs._guard import require_zstd
from teamvla_schema.codecs._stream import (
    Shape,
    check_frames,
    check_int_param,
    decode_frames,
    encode_stream,
    iter_decode,
    output_array,
    unknown_params,
)
from teamvla_schema.codecs._stream import (
    stream_params as x264_stream_params,
)
from teamvla_schema.codecs.file_range import FileRange

NAME = "lossless"
LOSSLESS = True
#: ``decode_range`` accepts a :class:`~teamvla_schema.codecs.file_range.FileRange`.
RANGE_READS = True
DEFAULT_GOP = 30
#: x264's speed presets: the ``preset`` parameter of streams written by teamvla-schema 0.1.0.
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)


def require() -> None:
    """Raise the one-line ImportError naming the extra if zstandard is missing."""
    require_zstd(NAME)


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` completed with the defaults; ``ValueError`` for unknown keys or bad values.

    ``{"gop": n}``; ``{"gop": n, "preset": name}`` is what an x264 stream of
    teamvla-schema 0.1.0 records, accepted so that its files still read.
    """
    unknown_params(NAME, params, ("gop", "preset"))
    gop = check_int_param(NAME, "gop", params.get("gop", DEFAULT_GOP))
    if "preset" not in params:
        return {"gop": gop}
    preset = params["preset"]
    if preset not in X264_PRESETS:
        raise ValueError(
            f"{NAME} codec: preset must be one of {list(X264_PRESETS)}, got {preset!r}"
        )
    return {"gop": gop, "preset": preset}


def encode(frames: np.ndarray, *, gop: int = DEFAULT_GOP) -> bytes:
    """Encode ``(T, H, W, 3)`` uint8 frames losslessly; any H and W."""
    frames = check_frames(frames)
    params = check_params({"gop": gop})
    require()
    return _predictive.encode(frames, gop=params["gop"], params=params)


def encode_x264(frames: np.ndarray, *, gop: int = DEFAULT_GOP, preset: str = "medium") -> bytes:
    """A stream as teamvla-schema 0.1.0 wrote it (libx264rgb, ``qp=0``; needs PyAV).

    Kept so that tests and benchmarks can make such streams; writers use :func:`encode`.
    """
    frames = check_frames(frames)
    params = check_params({"gop": gop, "preset": preset})
    return encode_stream(
        frames,
        encoder="libx264rgb",
        bitstream="h264",
        pix_fmt="rgb24",
        gop=params["gop"],
        options={"qp": "0", "preset": preset},
        codec=NAME,
        params=params,
    )


def decode(data: bytes, *, shape: Shape) -> np.ndarray:
    """All frames; ``shape`` is the ``(T, H, W, 3)`` the caller expects (anything else is refused)."""
    return decode_range(data, 0, int(shape[0]), shape=shape)


def decode_range(
    data: bytes | FileRange,
    start: int,
    stop: int,
    *,
    shape: Shape,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Frames ``start:stop``, decoded from the nearest keyframe at or before ``start``.

    ``data`` may be a :class:`FileRange`: then only the groups that hold the
    frames are read (a stream of teamvla-schema 0.1.0 is read whole). With
    ``out`` (a uint8 ``(stop - start, H, W, 3)`` array) the frames are decoded
    into it, and it is returned.
    """
    if _predictive.is_stream(data):
        return _predictive.decode_range(data, start, stop, shape=shape, out=out)
    if out is None:
        return decode_frames(data[:], NAME, shape, start, stop)
    result = output_array(out, stop - start, shape)
    result[...] = decode_frames(data[:], NAME, shape, start, stop)
    return result


def decode_chunks(data: bytes, *, shape: Shape, chunk: int) -> Iterator[np.ndarray]:
    """All frames in order, ``chunk`` at a time (memory stays at about one chunk and one group)."""
    if _predictive.is_stream(data):
        return _predictive.decode_chunks(data, shape=shape, chunk=chunk)
    return iter_decode(data, NAME, shape, chunk)


def stream_params(data: bytes, *, shape: Shape) -> Any:
    """The parameters the stream's own header records (after checking it against ``shape``)."""
    if _predictive.is_stream(data):
        return _predictive.stream_params(data, shape)
    return x264_stream_params(data, NAME, shape)
