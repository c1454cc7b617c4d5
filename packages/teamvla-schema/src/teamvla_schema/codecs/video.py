"""Lossy video codec: AV1 (SVT-AV1 through PyAV, yuv420p), quality set by ``crf``.

``crf`` (0-63) is the quality knob, lower is better; docs/storage.md gives the PSNR each
value reaches on the benchmark set. A keyframe every ``gop`` frames bounds random access
(decode_range decodes from the nearest keyframe). PyAV's wheels carry their own FFmpeg,
so no system FFmpeg is needed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from teamvla_schema.codecs import MAX_VIDEO_CRF
from teamvla_schema.codecs._guard import require_av
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
from teamvla_schema.codecs._stream import stream_params as _stream_params

NAME = "video"
LOSSLESS = False
#: ``decode_range`` needs the whole stream as ``bytes``.
RANGE_READS = False
DEFAULT_CRF = 30
DEFAULT_GOP = 30
DEFAULT_PRESET = 8
MAX_CRF = MAX_VIDEO_CRF
MAX_PRESET = 13


def require() -> None:
    """Raise the one-line ImportError naming the extra if PyAV is missing."""
    require_av(NAME)


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` completed with the defaults; ``ValueError`` for unknown keys or bad values.

    ``crf`` 0..63, ``gop`` >= 1, ``preset`` 0..13 or ``None`` (the encoder's own default).
    """
    unknown_params(NAME, params, ("crf", "gop", "preset"))
    crf = check_int_param(NAME, "crf", params.get("crf", DEFAULT_CRF), low=0, high=MAX_CRF)
    gop = check_int_param(NAME, "gop", params.get("gop", DEFAULT_GOP))
    preset = params.get("preset", DEFAULT_PRESET)
    if preset is not None:
        preset = check_int_param(NAME, "preset", preset, low=0, high=MAX_PRESET)
    return {"crf": crf, "gop": gop, "preset": preset}


def encode(
    frames: np.ndarray,
    *,
    crf: int = DEFAULT_CRF,
    gop: int = DEFAULT_GOP,
    preset: int | None = DEFAULT_PRESET,
) -> bytes:
    """Encode ``(T, H, W, 3)`` uint8 frames; odd H or W are padded to even (and cropped back).

    ``preset`` is SVT-AV1's speed preset (0 slowest/best .. 13 fastest; ``None``: the
    encoder's own default).
    """
    frames = check_frames(frames)
    params = check_params({"crf": crf, "gop": gop, "preset": preset})
    return encode_stream(
        frames,
        encoder="libsvtav1",
        bitstream="av1",
        pix_fmt="yuv420p",
        gop=params["gop"],
        options={"crf": str(crf)} | ({} if preset is None else {"preset": str(preset)}),
        codec=NAME,
        params=params,
        even_min=8,
    )


def decode(data: bytes, *, shape: Shape) -> np.ndarray:
    """All frames; ``shape`` is the ``(T, H, W, 3)`` the caller expects (anything else is refused)."""
    return decode_frames(data, NAME, shape, 0, int(shape[0]))


def decode_range(
    data: bytes, start: int, stop: int, *, shape: Shape, out: np.ndarray | None = None
) -> np.ndarray:
    """Frames ``start:stop``, decoded from the nearest keyframe at or before ``start``
    (into ``out`` when given: a uint8 ``(stop - start, H, W, 3)`` array, returned)."""
    if out is None:
        return decode_frames(data, NAME, shape, start, stop)
    result = output_array(out, stop - start, shape)
    result[...] = decode_frames(data, NAME, shape, start, stop)
    return result


def decode_chunks(data: bytes, *, shape: Shape, chunk: int) -> Iterator[np.ndarray]:
    """All frames in order, ``chunk`` at a time (memory stays at one chunk)."""
    return iter_decode(data, NAME, shape, chunk)


def stream_params(data: bytes, *, shape: Shape) -> Any:
    """The parameters the stream's own header records (after checking it against ``shape``)."""
    return _stream_params(data, NAME, shape)
