"""Minimal PNG encoder and decoder (zlib + struct, no Pillow), plus image tiling helpers.

Reusable outside the simulator (the trainer writes rollout strips with it).
Encodes 8-bit greyscale ``(H, W)``, RGB ``(H, W, 3)`` or RGBA ``(H, W, 4)``
uint8 arrays; decodes the same kinds of non-interlaced 8-bit PNGs, whatever
their row filters, which is enough to read back what this module writes.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from teamvla_schema.atomic import atomic_write_bytes

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type
_CHANNELS = {v: k for k, v in _COLOR_TYPES.items()}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _as_image(img: np.ndarray) -> np.ndarray:
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise ValueError(f"a PNG image must be uint8, received {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in _COLOR_TYPES or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(
            f"a PNG image must have shape (H, W), (H, W, 3) or (H, W, 4), received {arr.shape}"
        )
    return np.ascontiguousarray(arr)


def encode_png(img: np.ndarray, *, level: int = 6) -> bytes:
    """PNG bytes of a uint8 image (filter type 0 on every row; deterministic output)."""
    arr = _as_image(img)
    h, w, c = arr.shape
    raw = np.zeros((h, 1 + w * c), np.uint8)  # a leading 0 per row = filter "None"
    raw[:, 1:] = arr.reshape(h, w * c)
    header = struct.pack(">IIBBBBB", w, h, 8, _COLOR_TYPES[c], 0, 0, 0)
    return (
        _SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw.tobytes(), level))
        + _chunk(b"IEND", b"")
    )


def write_png(path: str | os.PathLike[str], img: np.ndarray) -> Path:
    """Write ``img`` as a PNG file atomically and return the path."""
    path = Path(path)
    atomic_write_bytes(path, encode_png(img))
    return path


def _unfilter(data: np.ndarray, h: int, stride: int, bpp: int) -> np.ndarray:
    out = np.zeros((h, stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    rows = data.reshape(h, stride + 1)
    for y in range(h):
        kind, line = int(rows[y, 0]), rows[y, 1:].astype(np.int32)
        if kind == 0:
            cur = line
        elif kind == 2:
            cur = (line + prev) & 0xFF
        else:  # Sub, Average, Paeth depend on the pixel to the left: go byte by byte
            cur = np.zeros(stride, np.int32)
            for i in range(stride):
                a = int(cur[i - bpp]) if i >= bpp else 0
                b = int(prev[i])
                c = int(prev[i - bpp]) if i >= bpp else 0
                if kind == 1:
                    pred = a
                elif kind == 3:
                    pred = (a + b) // 2
                elif kind == 4:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                else:
                    raise ValueError(f"unknown PNG row filter {kind}")
                cur[i] = (int(line[i]) + pred) & 0xFF
        out[y] = cur
        prev = cur
    return out


def decode_png(data: bytes) -> np.ndarray:
    """Decode an 8-bit, non-interlaced greyscale/RGB/RGBA PNG into a uint8 array."""
    if not data.startswith(_SIGNATURE):
        raise ValueError("not a PNG file (bad signature)")
    pos, idat, header = len(_SIGNATURE), [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise ValueError(f"PNG chunk {kind!r} has a bad CRC")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise ValueError("PNG has no IHDR chunk")
    w, h, depth, ctype, _, _, interlace = header
    if depth != 8 or ctype not in _CHANNELS or interlace:
        raise ValueError(
            f"unsupported PNG (bit depth {depth}, colour type {ctype}, interlace {interlace})"
        )
    c = _CHANNELS[ctype]
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8)
    img = _unfilter(raw, h, w * c, c).reshape(h, w, c)
    return img[:, :, 0] if c == 1 else img


def read_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a PNG file (see :func:`decode_png`)."""
    return decode_png(Path(path).read_bytes())


def tile(
    images: Sequence[Sequence[np.ndarray | None]],
    *,
    pad: int = 2,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Arrange a grid (rows of images, ``None`` = empty cell) of equal-size RGB images into one image."""
    cells: list[np.ndarray] = [img for row in images for img in row if img is not None]
    if not cells:
        raise ValueError("tile() needs at least one image")
    h, w = cells[0].shape[:2]
    for img in cells:
        if img.shape != (h, w, 3) or img.dtype != np.uint8:
            raise ValueError(
                f"tile() needs uint8 RGB images of one shape {(h, w, 3)}, received {img.dtype} {img.shape}"
            )
    nrows, ncols = len(images), max(len(r) for r in images)
    out = np.empty((nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), np.uint8)
    out[:] = background
    for i, row in enumerate(images):
        for j, cell in enumerate(row):
            if cell is not None:
                y, x = pad + i * (h + pad), pad + j * (w + pad)
                out[y : y + h, x : x + w] = cell
    return out


def upscale(img: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1, received {factor}")
    return np.repeat(np.repeat(img, factor, axis=0), factor, axis=1)
