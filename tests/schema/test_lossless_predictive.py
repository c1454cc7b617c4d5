"""The lossless codec's own stream (codecs._predictive): prediction paths, bytes, hostile input."""

from __future__ import annotations

import io
import json
import struct
import time
import zlib

import numpy as np
import pytest
from teamvla_schema import SchemaError

zstandard = pytest.importorskip("zstandard")
from teamvla_schema.codecs import _predictive, _predictive_stream, get_codec  # noqa: E402

codec = get_codec("lossless")


def scene(t: int, h: int, w: int, *, pan: float = 0.0, drift: float = 0.0, seed: int = 0):
    """Textured frames, optionally panning (pixels per frame) and brightening, with sensor noise."""
    rng = np.random.default_rng(seed)
    size = max(h, w) + int(abs(pan) * t) + 8
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = 110 + 30 * np.sin(xx / 4.0)[..., None] + 20 * np.cos(yy / 5.0)[..., None]
    base = base + np.array([0.0, 15.0, -15.0], np.float32)
    frames = np.empty((t, h, w, 3), np.float32)
    for i in range(t):
        x0 = 4 + pan * i
        ix, fx = int(x0), x0 - int(x0)
        view = (1 - fx) * base[:h, ix : ix + w] + fx * base[:h, ix + 1 : ix + 1 + w]
        frames[i] = view * (1 + drift * i)
    frames += rng.normal(0, 1, frames.shape)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def side_info(data: bytes, shape, group: int = 0) -> np.ndarray:
    """The ``(frames - 1, 2 + blocks)`` side information of one group (shift, block map)."""
    parsed = _predictive_stream.parse(data, shape)
    bh, bw = _predictive.blocks(shape[1], shape[2])
    n = min(parsed.gop, shape[0] - group * parsed.gop)
    raw = zstandard.ZstdDecompressor().decompress(parsed.group(group)[2])
    return np.frombuffer(raw, np.int8).reshape(n - 1, 2 + bh * bw)


def test_a_panning_camera_is_coded_with_global_shifts_and_decodes_exactly() -> None:
    frames = scene(12, 40, 48, pan=0.4)
    data = codec.encode(frames, gop=12)
    side = side_info(data, frames.shape)
    assert (side[:, :2] != 0).any(axis=1).mean() > 0.5  # most frames moved
    np.testing.assert_array_equal(codec.decode(data, shape=frames.shape), frames)


def test_a_still_camera_uses_the_running_average_with_its_bias_and_decodes_exactly() -> None:
    frames = scene(16, 32, 32, drift=0.01, seed=1)
    data = codec.encode(frames, gop=16)
    side = side_info(data, frames.shape)
    assert not side[:, :2].any()  # no shift for a still camera
    assert (side[:, 2:] == _predictive.AVERAGE).mean() > 0.3  # the average predicts many blocks
    np.testing.assert_array_equal(codec.decode(data, shape=frames.shape), frames)
    for start, stop in [(0, 1), (3, 9), (15, 16)]:
        np.testing.assert_array_equal(
            codec.decode_range(data, start, stop, shape=frames.shape), frames[start:stop]
        )


@pytest.mark.parametrize("shape", [(7, 9, 13, 3), (5, 8, 8, 3), (3, 1, 1, 3), (4, 1, 17, 3)])
def test_sizes_that_are_not_whole_blocks_round_trip(shape) -> None:
    frames = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    frames[1:] = frames[:1] // 2 + frames[1:] // 2  # some temporal correlation
    data = codec.encode(frames, gop=3)
    np.testing.assert_array_equal(codec.decode(data, shape=shape), frames)
    chunks = list(codec.decode_chunks(data, shape=shape, chunk=2))
    np.testing.assert_array_equal(np.concatenate(chunks), frames)


def test_extreme_frames_round_trip() -> None:
    # Residuals at the ends of the byte range: black/white flicker, a jump between groups.
    frames = np.zeros((9, 16, 16, 3), np.uint8)
    frames[1::2] = 255
    frames[4, ::2, ::3] = 7
    frames[8] = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    data = codec.encode(frames, gop=4)
    np.testing.assert_array_equal(codec.decode(data, shape=frames.shape), frames)


def test_encoding_is_deterministic() -> None:
    frames = scene(10, 24, 24, pan=0.3, seed=4)
    assert codec.encode(frames, gop=5) == codec.encode(frames, gop=5)


def test_warp_by_whole_pixels_is_a_clamped_shift() -> None:
    ref = np.random.default_rng(3).integers(0, 256, (6, 7, 3)).astype(np.uint8)
    sixteen = ref.astype(np.int16) * 16
    np.testing.assert_array_equal(_predictive.warp(ref, 0, 0), sixteen)
    moved = _predictive.warp(ref, 8, -16)  # one pixel down, two left: (y + 1, x - 2)
    expected = sixteen[np.clip(np.arange(6) + 1, 0, 5)][:, np.clip(np.arange(7) - 2, 0, 6)]
    np.testing.assert_array_equal(moved, expected)
    half = _predictive.warp(ref, 0, 4)  # half a pixel right: the mean of two neighbours
    np.testing.assert_array_equal(half[:, :-1], 8 * (ref[:, :-1].astype(np.int16) + ref[:, 1:]))


def test_warp_matches_bilinear_sampling_in_wide_integers() -> None:
    """The int16 warp equals round(16 x bilinear) computed in int64, for every sub-pixel shift."""
    rng = np.random.default_rng(9)
    ref = rng.integers(0, 256, (11, 13, 3)).astype(np.uint8)
    ref[0, 0] = ref[-1, -1] = 255  # the largest values, where int16 could overflow
    h, w = ref.shape[:2]
    wide = ref.astype(np.int64) * 16
    for dy, dx in [(3, 5), (-13, 7), (32, -32), (-1, -1), (17, 0), (0, -30)]:
        ys, xs = np.arange(h) * 8 + dy, np.arange(w) * 8 + dx
        y0, x0 = ys >> 3, xs >> 3
        fy, fx = (ys & 7)[:, None, None], (xs & 7)[None, :, None]

        def at(y: np.ndarray, x: np.ndarray) -> np.ndarray:
            return wide[np.clip(y, 0, h - 1)][:, np.clip(x, 0, w - 1)]

        total = (
            at(y0, x0) * (8 - fy) * (8 - fx)
            + at(y0, x0 + 1) * (8 - fy) * fx
            + at(y0 + 1, x0) * fy * (8 - fx)
            + at(y0 + 1, x0 + 1) * fy * fx
        )
        np.testing.assert_array_equal(_predictive.warp(ref, dy, dx), (total + 32) >> 6)


def test_smaller_than_per_frame_png_on_noisy_camera_frames() -> None:
    image = pytest.importorskip("PIL.Image")
    frames = scene(30, 48, 64, pan=0.25, drift=0.003, seed=5)
    png = 0
    for frame in frames:
        buf = io.BytesIO()
        image.fromarray(frame).save(buf, format="PNG")
        png += len(buf.getvalue())
    assert len(codec.encode(frames)) < 0.9 * png


# --------------------------------------------------------------------------- hostile bytes


def rebuild(data: bytes, shape, *, side=None, residual=None, header=None) -> bytes:
    """``data`` with group 0's side or residual stream replaced and the table and CRC redone."""
    parsed = _predictive_stream.parse(data, shape)
    key, res, sid = (bytes(part) for part in parsed.group(0))
    if side is not None:
        sid = side
    if residual is not None:
        res = residual
    head = dict(parsed.header, **(header or {}))
    table = parsed.table.copy()
    table[0] = (len(key), len(res), len(sid), zlib.crc32(key + res + sid))
    rest = b"".join(bytes(part) for g in range(1, len(table)) for part in parsed.group(g))
    text = json.dumps(head, sort_keys=True).encode()
    return (
        struct.pack("<4sBI", b"TVLL", 1, len(text))
        + text
        + table.tobytes()
        + key
        + res
        + sid
        + rest
    )


def test_side_information_out_of_range_is_refused() -> None:
    frames = scene(6, 16, 16, seed=6)
    data = codec.encode(frames, gop=6)
    side = side_info(data, frames.shape).copy()
    for edit in ("shift", "map"):
        bad = side.copy()
        if edit == "shift":
            bad[0, 0] = _predictive.MAX_SHIFT + 1
        else:
            bad[1, 5] = 2
        blob = rebuild(data, frames.shape, side=zstandard.ZstdCompressor().compress(bad.tobytes()))
        with pytest.raises(SchemaError, match="side information"):
            codec.decode(blob, shape=frames.shape)


def test_a_stream_declaring_more_bytes_than_the_shape_allows_is_refused_before_inflating() -> None:
    frames = scene(6, 16, 16, seed=7)
    data = codec.encode(frames, gop=6)
    bomb = zstandard.ZstdCompressor().compress(bytes(1 << 26))  # 64 MiB of zeros
    blob = rebuild(data, frames.shape, residual=bomb)
    t0 = time.perf_counter()
    with pytest.raises(SchemaError, match="declares"):
        codec.decode(blob, shape=frames.shape)
    assert time.perf_counter() - t0 < 1.0


def test_inconsistent_headers_are_refused() -> None:
    frames = scene(6, 16, 16, seed=8)
    data = codec.encode(frames, gop=3)
    for edit, message in [
        ({"groups": 3}, "groups"),
        ({"gop": 0}, "gop"),
        ({"block": 16}, "block"),
        ({"codec": "video"}, "header"),
    ]:
        parsed = _predictive_stream.parse(data, frames.shape)
        head = json.dumps(dict(parsed.header, **edit), sort_keys=True).encode()
        blob = (
            struct.pack("<4sBI", b"TVLL", 1, len(head))
            + head
            + data[9 + len(json.dumps(parsed.header, sort_keys=True)) :]
        )
        with pytest.raises(SchemaError, match=message):
            codec.decode(blob, shape=frames.shape)


def test_a_corrupted_group_fails_its_crc_before_anything_is_inflated() -> None:
    frames = scene(8, 16, 16, seed=9)
    data = bytearray(codec.encode(frames, gop=4))
    data[-5] ^= 0x10  # inside the last group
    with pytest.raises(SchemaError, match="CRC-32 mismatch in group 1"):
        codec.decode(bytes(data), shape=frames.shape)
    # The groups before it still decode: ranges read only what they need.
    np.testing.assert_array_equal(
        codec.decode_range(bytes(data), 0, 4, shape=frames.shape), frames[:4]
    )
