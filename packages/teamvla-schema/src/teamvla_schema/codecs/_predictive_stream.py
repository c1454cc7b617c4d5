"""The ``lossless`` codec's byte stream: :mod:`codecs._predictive`'s residuals through zstd.

Layout (little-endian)::

    b"TVLL" | version u8 | header length u32 | header JSON (UTF-8)
    | group table: n x (key u32, residuals u32, side u32, CRC-32 u32) | groups

Each group is three zstd frames: the key frame's residual, the residuals of the
other frames and their side information (shift and block map). The header and
the table are checked against the shape the caller expects before anything is
decompressed; a zstd frame must declare exactly the bytes its group needs, and a
group's CRC-32 is checked before it is inflated. So corrupt or hostile bytes fail
with :class:`SchemaError`, never make an array larger than the caller asked for,
and a frame range reads only its own groups.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from teamvla_schema.codecs._predictive import (
    BLOCK,
    blocks,
    decode_group,
    encode_group,
    padded,
    side_bytes,
)
from teamvla_schema.codecs._stream import (
    frame_header,
    header_int,
    header_shape,
    output_array,
    read_header,
)
from teamvla_schema.errors import SchemaError

NAME = "lossless"
MAGIC = b"TVLL"
VERSION = 1
_TABLE = np.dtype([("key", "<u4"), ("residual", "<u4"), ("side", "<u4"), ("crc32", "<u4")])
Shape = tuple[int, int, int, int]


def _zstd() -> Any:
    from teamvla_schema.codecs._guard import require_zstd

    return require_zstd("lossless")


def _packer(zstd: Any) -> Any:
    """The zstd compressor for residuals.

    Residuals are noise-like: string matches seldom pay, and zstd's fast
    (greedy) levels lose 10-25 % to bad short matches on them. Its optimal
    parser with 7-byte minimum matches and tiny search tables stores within
    2.5 % of their order-0 entropy at ~17 MB/s, as small as ``-19`` and 10x
    faster; decoding runs at ~2 GB/s (measured: docs/storage.md).
    """
    params = zstd.ZstdCompressionParameters(
        window_log=21,
        min_match=7,
        strategy=7,  # btopt
        search_log=1,
        hash_log=12,
        chain_log=12,
        target_length=16,
        write_content_size=True,
        write_checksum=False,
    )
    return zstd.ZstdCompressor(compression_params=params)


def encode(frames: np.ndarray, *, gop: int, params: dict[str, Any]) -> bytes:
    """The stream of ``frames`` ``(T, H, W, 3)`` uint8, in groups of ``gop`` frames."""
    packer = _packer(_zstd())
    t, h, w, _ = frames.shape
    coded = padded(frames)
    parts: list[bytes] = []
    table = np.zeros(-(-t // gop), _TABLE)
    for g, start in enumerate(range(0, t, gop)):
        key, residual, side = (
            packer.compress(part.tobytes()) for part in encode_group(coded[start : start + gop])
        )
        table[g] = (len(key), len(residual), len(side), zlib.crc32(key + residual + side))
        parts += (key, residual, side)
    body = b"".join(parts)
    header = {
        "codec": "lossless",
        "format": "tvll",
        "frames": t,
        "height": h,
        "width": w,
        "gop": gop,
        "block": BLOCK,
        "groups": len(table),
        "params": params,
    }
    return frame_header(MAGIC, VERSION, header) + table.tobytes() + body


class Bytes(Protocol):
    """What the decoder reads: ``bytes``, or a byte range of a file read on demand
    (:class:`~teamvla_schema.codecs.FileRange`), so a frame range reads only its groups."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice, /) -> bytes: ...


def is_stream(data: Bytes) -> bool:
    """Whether ``data`` starts like a stream of this format."""
    return bytes(data[:4]) == MAGIC


def _sizes(table: np.ndarray) -> np.ndarray:
    """``(groups, 3)`` int64 byte counts of each group's key, residual and side frames."""
    return np.stack([table["key"], table["residual"], table["side"]], axis=1).astype(np.int64)


class _Parsed:
    def __init__(self, header: dict[str, Any], table: np.ndarray, data: Bytes, body_start: int):
        self.header = header
        self.table = table
        self.data = data
        self.offsets = body_start + np.concatenate([[0], np.cumsum(_sizes(table).reshape(-1))])
        self.gop = int(header["gop"])

    def group(self, group: int) -> tuple[memoryview, memoryview, memoryview]:
        """A group's three zstd frames, read once; its CRC-32 is checked before anything is inflated."""
        first, stop = int(self.offsets[3 * group]), int(self.offsets[3 * group + 3])
        whole = bytes(self.data[first:stop])
        if len(whole) != stop - first:
            raise SchemaError(f"lossless data is truncated (group {group})")
        if zlib.crc32(whole) != int(self.table["crc32"][group]):
            raise SchemaError(f"lossless data is corrupt (CRC-32 mismatch in group {group})")
        view = memoryview(whole)
        cuts = [int(c) - first for c in self.offsets[3 * group : 3 * group + 4]]
        return view[cuts[0] : cuts[1]], view[cuts[1] : cuts[2]], view[cuts[2] : cuts[3]]


def parse(data: Bytes, shape: Shape) -> _Parsed:
    """Check ``data`` against the expected ``shape`` ``(T, H, W, 3)`` and split it."""
    size = len(data)
    header, start = read_header(data, NAME, MAGIC, VERSION)
    if header.get("codec") != NAME:
        raise SchemaError("corrupt lossless codec header: not a lossless stream's header")
    found = header_shape(header, shape, NAME)
    gop = header_int(header, "gop", 1, 1 << 16, NAME)
    header_int(header, "block", BLOCK, BLOCK, NAME)
    groups = header_int(header, "groups", 1, 1 << 31, NAME)
    if groups != -(-found[0] // gop):
        raise SchemaError(
            f"corrupt lossless header: {groups} groups for {found[0]} frames of {gop}"
        )
    body_start = start + groups * _TABLE.itemsize
    if body_start > size:
        raise SchemaError("lossless data is truncated (group table)")
    table = np.frombuffer(bytes(data[start:body_start]), _TABLE)
    total = int(_sizes(table).sum())
    if total != size - body_start:
        raise SchemaError(
            "lossless data is truncated or padded: groups hold "
            f"{total} bytes, found {size - body_start}"
        )
    return _Parsed(header, table, data, body_start)


def stream_params(data: Bytes, shape: Shape) -> Any:
    """The parameters recorded in the stream's own header (after checking it against ``shape``)."""
    return parse(data, shape).header.get("params")


def _inflate(zstd: Any, blob: memoryview, size: int, what: str) -> bytes:
    """Exactly ``size`` bytes out of one zstd frame, its declared size checked first."""
    try:
        declared = zstd.frame_content_size(blob)
        if declared != size:
            raise SchemaError(
                f"corrupt lossless data: {what} declares {declared} bytes, not {size}"
            )
        out: bytes = zstd.ZstdDecompressor().decompress(blob, max_output_size=size)
    except zstd.ZstdError as exc:
        raise SchemaError(f"corrupt lossless data ({what}): {exc}") from None
    if len(out) != size:
        raise SchemaError(f"corrupt lossless data: {what} holds {len(out)} bytes, not {size}")
    return out


def _decode_group(
    parsed: _Parsed, group: int, stop: int, zstd: Any, out: np.ndarray | None = None
) -> np.ndarray:
    """Frames ``0:stop`` of ``group`` (``stop`` counted within the group), padded to whole
    blocks, in ``out`` (``(stop, PH, PW, 3)`` uint8) when given."""
    bh, bw = blocks(int(parsed.header["height"]), int(parsed.header["width"]))
    ph, pw = bh * BLOCK, bw * BLOCK
    n = min(parsed.gop, int(parsed.header["frames"]) - group * parsed.gop)
    frame_bytes = ph * pw * 3
    key_part, residual_part, side_part = parsed.group(group)
    what = f"group {group}"
    key = _inflate(zstd, key_part, frame_bytes, f"{what} key frame")
    residuals = side = b""
    if stop > 1:
        residuals = _inflate(zstd, residual_part, (n - 1) * frame_bytes, f"{what} residuals")
        side = _inflate(zstd, side_part, side_bytes(n, bh, bw), f"{what} side")
    try:
        return decode_group(
            np.frombuffer(key, np.uint8).reshape(ph, pw, 3),
            np.frombuffer(residuals, np.uint8).reshape(-1, ph, pw, 3)[: stop - 1],
            np.frombuffer(side, np.int8).reshape(-1, 2 + bh * bw)[: stop - 1],
            out,
        )
    except SchemaError as exc:
        raise SchemaError(f"{exc.reason} (group {group})") from None


def _cropped(frames: np.ndarray, shape: Shape) -> np.ndarray:
    """Decoded frames without the padding to whole blocks."""
    h, w = int(shape[1]), int(shape[2])
    if frames.shape[1:3] == (h, w):
        return frames
    return np.ascontiguousarray(frames[:, :h, :w])


def decode_range(
    data: Bytes, start: int, stop: int, *, shape: Shape, out: np.ndarray | None = None
) -> np.ndarray:
    """Frames ``start:stop``, decoded from the start of the group holding ``start``.

    Only those groups' bytes are read from ``data``. Frames are decoded straight
    into the result (``out`` when given) where they need no cropping and belong to it.
    """
    zstd = _zstd()
    parsed = parse(data, shape)
    t, h, w = int(shape[0]), int(shape[1]), int(shape[2])
    if not 0 <= start < stop <= t:
        raise IndexError(f"frame range {start}:{stop} is outside 0:{t}")
    gop = parsed.gop
    bh, bw = blocks(h, w)
    direct = (bh * BLOCK, bw * BLOCK) == (h, w)
    result = output_array(out, stop - start, shape)
    for g in range(start // gop, (stop - 1) // gop + 1):
        first = g * gop
        count = min(gop, stop - first)  # frames of this group to decode
        if direct and first >= start:
            _decode_group(parsed, g, count, zstd, result[first - start : first - start + count])
        else:
            frames = _cropped(_decode_group(parsed, g, count, zstd), shape)
            skip = max(0, start - first)
            result[first + skip - start : first + count - start] = frames[skip:]
    return result


def decode_chunks(data: Bytes, *, shape: Shape, chunk: int) -> Iterator[np.ndarray]:
    """Every frame in order, ``chunk`` at a time (memory stays near a group and a chunk)."""
    zstd = _zstd()
    parsed = parse(data, shape)
    t = int(shape[0])
    chunk = max(1, int(chunk))
    pending: list[np.ndarray] = []
    held = 0
    for g in range(len(parsed.table)):
        frames = _decode_group(parsed, g, min(parsed.gop, t - g * parsed.gop), zstd)
        pending.append(_cropped(frames, shape))
        held += len(frames)
        while held >= chunk:
            joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
            yield joined[:chunk].copy()
            pending, held = [joined[chunk:]], held - chunk
    if held:
        yield np.concatenate(pending) if len(pending) > 1 else pending[0]
