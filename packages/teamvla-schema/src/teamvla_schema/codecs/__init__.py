"""Image-sequence codecs for episode camera fields (docs/storage.md).

Each codec is a module with ``encode(frames, **params) -> bytes``,
``decode(data, *, shape) -> frames`` and ``decode_range(data, start, stop, *, shape)``,
where ``frames`` is a ``(T, H, W, 3)`` uint8 array. Decoding never unpickles and never
returns anything but an array of the ``shape`` the caller expects: bytes that do not
match raise :class:`~teamvla_schema.errors.SchemaError` (a ``ValueError``).

Codecs are imported lazily, so ``import teamvla_schema`` needs numpy alone; the video
codecs need PyAV (``pip install teamvla-schema[video]``) and raise a one-line
``ImportError`` naming the extra when it is missing.

>>> from teamvla_schema.codecs import available_codecs
>>> available_codecs()
('lossless', 'video')
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np

#: Codec name -> module path. "lossless" is bit-exact, "video" is lossy (``crf``).
_CODECS: dict[str, str] = {
    "lossless": "teamvla_schema.codecs.lossless",
    "video": "teamvla_schema.codecs.video",
}


class Codec(Protocol):
    """What every codec module provides."""

    NAME: str
    LOSSLESS: bool

    def encode(self, frames: np.ndarray, **params: Any) -> bytes: ...

    def decode(self, data: bytes, *, shape: tuple[int, int, int, int]) -> np.ndarray: ...

    def decode_range(
        self, data: bytes, start: int, stop: int, *, shape: tuple[int, int, int, int]
    ) -> np.ndarray: ...


def available_codecs() -> tuple[str, ...]:
    """The registered codec names (whether or not their optional dependency is installed)."""
    return tuple(_CODECS)


def get_codec(name: str) -> Codec:
    """The codec module registered under ``name``.

    Raises ``KeyError`` for an unknown name and ``ImportError`` (naming the extra to
    install) when the codec's optional dependency is missing.
    """
    try:
        module_name = _CODECS[name]
    except KeyError:
        raise KeyError(f"unknown codec {name!r}; known: {', '.join(_CODECS)}") from None
    module = importlib.import_module(module_name)
    module.require()
    return module


__all__ = ["Codec", "available_codecs", "get_codec"]
