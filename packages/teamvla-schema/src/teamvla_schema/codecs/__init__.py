"""Image-sequence codecs for episode camera fields (docs/storage.md).

Each codec is a module with ``encode(frames, **params) -> bytes``,
``decode(data, *, shape) -> frames``, ``decode_range(data, start, stop, *, shape)``,
``decode_chunks(data, *, shape, chunk)`` (all frames, a bounded chunk at a time),
``check_params(params) -> params`` (defaults filled in, bad values refused with
``ValueError``) and ``stream_params(data, *, shape)`` (what the stream's own header
records), where ``frames`` is a ``(T, H, W, 3)`` uint8 array. A codec whose ``RANGE_READS``
is true also decodes a range from a :class:`~teamvla_schema.codecs.file_range.FileRange`
(a stream's place in an open file), reading only the bytes that hold the range
(``read_frames`` uses it). Decoding never unpickles and never
returns anything but an array of the ``shape`` the caller expects: bytes that do not
match raise :class:`~teamvla_schema.errors.SchemaError` (a ``ValueError``).

Codecs are imported lazily, so ``import teamvla_schema`` needs numpy alone; ``lossless``
needs zstandard and ``video`` needs PyAV (both: ``pip install "teamvla-schema[video]"``),
and each raises a one-line ``ImportError`` naming the extra when it is missing.

>>> from teamvla_schema.codecs import available_codecs
>>> available_codecs()
('lossless', 'video')
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import numpy as np

from teamvla_schema.codecs.file_range import FileRange

#: Codec name -> module path. "lossless" is bit-exact (temporal prediction + zstd), "video"
#: is lossy (AV1, ``crf``).
_CODECS: dict[str, str] = {
    "lossless": "teamvla_schema.codecs.lossless",
    "video": "teamvla_schema.codecs.video",
}

#: Largest ``crf`` of the ``video`` codec (AV1's scale: 0..63, lower is better).
MAX_VIDEO_CRF = 63


class Codec(Protocol):
    """What every codec module provides.

    ``decode_range(..., out=array)`` decodes into the caller's uint8
    ``(stop - start, H, W, 3)`` array (e.g. a cache slot) and returns it.
    """

    NAME: str
    LOSSLESS: bool
    #: Whether ``decode_range`` also takes a :class:`FileRange` (and reads only what it decodes).
    RANGE_READS: bool

    def require(self) -> None: ...

    def encode(self, frames: np.ndarray, **params: Any) -> bytes: ...

    def decode(self, data: bytes, *, shape: tuple[int, int, int, int]) -> np.ndarray: ...

    def decode_range(
        self,
        data: bytes | FileRange,
        start: int,
        stop: int,
        *,
        shape: tuple[int, int, int, int],
        out: np.ndarray | None = None,
    ) -> np.ndarray: ...

    def decode_chunks(
        self, data: bytes, *, shape: tuple[int, int, int, int], chunk: int
    ) -> Iterator[np.ndarray]: ...

    def check_params(self, params: Mapping[str, Any]) -> dict[str, Any]: ...

    def stream_params(self, data: bytes, *, shape: tuple[int, int, int, int]) -> Any: ...


def available_codecs() -> tuple[str, ...]:
    """The registered codec names (whether or not their optional dependency is installed)."""
    return tuple(_CODECS)


def codec_module(name: str) -> Codec:
    """The codec module registered under ``name``, without requiring its optional dependency.

    Enough for :func:`Codec.check_params` (checking metadata needs no PyAV); raises
    ``KeyError`` for an unknown name.
    """
    try:
        module_name = _CODECS[name]
    except KeyError:
        raise KeyError(f"unknown codec {name!r}; known: {', '.join(_CODECS)}") from None
    module: Codec = importlib.import_module(module_name)
    return module


def get_codec(name: str) -> Codec:
    """The codec module registered under ``name``.

    Raises ``KeyError`` for an unknown name and ``ImportError`` (naming the extra to
    install) when the codec's optional dependency is missing.
    """
    module = codec_module(name)
    module.require()
    return module


def add_image_codec_arguments(
    parser: argparse.ArgumentParser, *, what: str, codec_default: str, crf_default: int | None
) -> None:
    """``--image-codec none|lossless|video`` and ``--video-crf N`` (0..63), as every writer's CLI
    spells them; ``what`` says which episodes they apply to, ``codec_default`` what ``None``
    (the option not given) means."""
    parser.add_argument(
        "--image-codec",
        choices=("none", *available_codecs()),
        default=None,
        help=f"{what}: store the camera fields as lossless (bit-exact) or video (lossy AV1) "
        f"image streams, none = plain arrays (default: {codec_default}; docs/storage.md; "
        'codecs need pip install "teamvla-schema[video]")',
    )
    parser.add_argument(
        "--video-crf",
        type=_video_crf,
        default=crf_default,
        metavar="CRF",
        help=f"quality of --image-codec video, AV1 crf 0-{MAX_VIDEO_CRF}, lower is better "
        "(default 30)",
    )


def _video_crf(text: str) -> int:
    """An AV1 crf (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_VIDEO_CRF:
        raise argparse.ArgumentTypeError(
            f"expected an integer 0-{MAX_VIDEO_CRF}, received {text!r}"
        )
    return value


__all__ = [
    "Codec",
    "add_image_codec_arguments",
    "available_codecs",
    "codec_module",
    "get_codec",
]
