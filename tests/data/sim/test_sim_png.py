"""The PNG writer/reader and contact sheets."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from teamvla_data.sim import contact_sheet, decode_png, encode_png, read_png, write_png
from teamvla_data.sim.png import tile, upscale
from teamvla_data.sim.sheet import frame_indices


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3), (1, 1, 4), (33, 17, 3)])
def test_round_trip(shape, tmp_path):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(decode_png(encode_png(img)), img)
    path = write_png(tmp_path / "x.png", img)
    assert np.array_equal(read_png(path), img)
    assert encode_png(img) == encode_png(img.copy())  # deterministic bytes


def _png_with_filters(img: np.ndarray) -> bytes:
    """An RGB PNG whose rows use filters 0-4 in turn (written independently of the module)."""
    h, w, c = img.shape
    raw = bytearray()
    prev = [0] * (w * c)
    for y in range(h):
        kind = y % 5
        line = [int(v) for v in img[y].reshape(-1)]
        out = []
        for i, x in enumerate(line):
            a = line[i - c] if i >= c else 0
            b = prev[i]
            cc = prev[i - c] if i >= c else 0
            if kind == 0:
                pred = 0
            elif kind == 1:
                pred = a
            elif kind == 2:
                pred = b
            elif kind == 3:
                pred = (a + b) // 2
            else:
                p = a + b - cc
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else cc)
            out.append((x - pred) & 0xFF)
        raw += bytes([kind, *out])
        prev = line

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(bytes(raw)))
        + chunk(b"IEND", b"")
    )


def test_decoder_handles_every_row_filter():
    img = np.random.default_rng(1).integers(0, 256, (10, 6, 3), dtype=np.uint8)
    assert np.array_equal(decode_png(_png_with_filters(img)), img)


def test_bad_inputs():
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        encode_png(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="signature"):
        decode_png(b"GIF89a")
    data = bytearray(encode_png(np.zeros((2, 2, 3), np.uint8)))
    data[20] ^= 0xFF  # corrupt the IHDR body
    with pytest.raises(ValueError, match="CRC"):
        decode_png(bytes(data))


def test_tile_upscale_and_contact_sheet():
    a = np.full((4, 4, 3), 10, np.uint8)
    b = np.full((4, 4, 3), 200, np.uint8)
    grid = tile([[a, b], [None, a]], pad=1)
    assert grid.shape == (11, 11, 3)
    assert np.array_equal(grid[1:5, 6:10], b) and np.all(grid[6:10, 1:5] == 255)
    assert upscale(a, 3).shape == (12, 12, 3)
    assert frame_indices(10, 4) == [0, 3, 6, 9] and frame_indices(3, 8) == [0, 1, 2]
    rgb = np.stack([np.full((8, 8, 3), i, np.uint8) for i in range(6)])
    success = np.array([False] * 5 + [True])
    sheet = contact_sheet(rgb, 255 - rgb, success, frames=3, scale=1)
    assert sheet.shape[1] == 3 * (8 + 2) + 2
    assert np.array_equal(sheet[2:10, 2:10], rgb[0]) and np.array_equal(
        sheet[12:20, 22:30], 255 - rgb[5]
    )
    bar_row = sheet[22]
    assert tuple(bar_row[25]) == (40, 170, 60) and tuple(bar_row[5]) == (200, 200, 200)
    with pytest.raises(ValueError):
        contact_sheet(rgb, rgb[:3])
