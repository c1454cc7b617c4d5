"""Lossy video codec: AV1 (SVT-AV1 through PyAV, yuv420p), quality set by ``crf``.

``crf`` (0-63) is the quality knob, lower is better; docs/storage.md gives the PSNR each
value reaches on the benchmark set. A keyframe every ``gop`` frames bounds random access
(decode_range decodes from the nearest keyframe). PyAV's wheels carry their own FFmpeg,
so no system FFmpeg is needed.
"""

from __future__ import annotations

import numpy as np

from teamvla_schema.codecs._guard import require_av
from teamvla_schema.codecs._stream import Shape, check_frames, decode_frames, encode_stream

NAME = "video"
LOSSLESS = False
DEFAULT_CRF = 30
DEFAULT_GOP = 30
DEFAULT_PRESET = 8


def require() -> None:
    """Raise the one-line ImportError naming the extra if PyAV is missing."""
    require_av(NAME)


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
    if not 0 <= crf <= 63:
        raise ValueError(f"crf must be in 0..63, got {crf}")
    if gop < 1:
        raise ValueError(f"gop must be >= 1, got {gop}")
    return encode_stream(
        frames,
        encoder="libsvtav1",
        bitstream="av1",
        pix_fmt="yuv420p",
        gop=gop,
        options={"crf": str(crf)} | ({} if preset is None else {"preset": str(preset)}),
        codec=NAME,
        params={"crf": crf, "gop": gop, "preset": preset},
        even_min=8,
    )


def decode(data: bytes, *, shape: Shape) -> np.ndarray:
    """All frames; ``shape`` is the ``(T, H, W, 3)`` the caller expects (anything else is refused)."""
    return decode_frames(data, NAME, shape, 0, int(shape[0]))


def decode_range(data: bytes, start: int, stop: int, *, shape: Shape) -> np.ndarray:
    """Frames ``start:stop``, decoded from the nearest keyframe at or before ``start``."""
    return decode_frames(data, NAME, shape, start, stop)
