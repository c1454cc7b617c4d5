"""Lossless codec: H.264 in its lossless RGB mode (libx264rgb, ``qp=0``) through PyAV.

Bit-exact: the G, B and R planes are coded as they are (no colour conversion), and
prediction runs across frames (motion-compensated inter prediction), which per-frame PNG
cannot do. On the camera-like benchmark set it stores 0.79x the bytes of per-frame PNG
(docs/storage.md). A keyframe every ``gop`` frames bounds the cost of random access.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from teamvla_schema.codecs._guard import require_av
from teamvla_schema.codecs._stream import (
    Shape,
    check_frames,
    check_int_param,
    decode_frames,
    encode_stream,
    iter_decode,
    unknown_params,
)

NAME = "lossless"
LOSSLESS = True
DEFAULT_GOP = 30
DEFAULT_PRESET = "medium"
#: x264's speed presets (its own names; the encoder refuses anything else).
PRESETS = (
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
    """Raise the one-line ImportError naming the extra if PyAV is missing."""
    require_av(NAME)


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` completed with the defaults; ``ValueError`` for unknown keys or bad values."""
    unknown_params(NAME, params, ("gop", "preset"))
    gop = check_int_param(NAME, "gop", params.get("gop", DEFAULT_GOP))
    preset = params.get("preset", DEFAULT_PRESET)
    if preset not in PRESETS:
        raise ValueError(f"{NAME} codec: preset must be one of {list(PRESETS)}, got {preset!r}")
    return {"gop": gop, "preset": preset}


def encode(frames: np.ndarray, *, gop: int = DEFAULT_GOP, preset: str = DEFAULT_PRESET) -> bytes:
    """Encode ``(T, H, W, 3)`` uint8 frames losslessly; any H and W (odd sizes included)."""
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
    return decode_frames(data, NAME, shape, 0, int(shape[0]))


def decode_range(data: bytes, start: int, stop: int, *, shape: Shape) -> np.ndarray:
    """Frames ``start:stop``, decoded from the nearest keyframe at or before ``start``."""
    return decode_frames(data, NAME, shape, start, stop)


def decode_chunks(data: bytes, *, shape: Shape, chunk: int) -> Iterator[np.ndarray]:
    """All frames in order, ``chunk`` at a time (memory stays at one chunk)."""
    return iter_decode(data, NAME, shape, chunk)
