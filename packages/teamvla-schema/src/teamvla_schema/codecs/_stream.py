"""A PyAV packet stream in a small self-describing byte string (no container demuxer).

Layout (little-endian)::

    b"TVSQ" | version u8 | header length u32 | header JSON (UTF-8)
    | packet table: n x (size u32, pts u32, flags u8) | extradata | packets

The header names the bitstream (``"h264"`` or ``"av1"``; the decoder is picked from a
fixed table, never from the bytes), the frame count and size, and a CRC-32 of everything
after the table. Decoding checks all of it against the shape the caller expects before a
single packet reaches the decoder, so corrupt or hostile bytes fail fast with a
:class:`SchemaError` and the output can never be larger than the caller asked for.
Packets are stored in decode order with their presentation index (``pts``), and
keyframes are flagged, so a frame range decodes from the nearest keyframe before it.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Generator, Iterator
from fractions import Fraction
from typing import Any

import numpy as np

from teamvla_schema.codecs._guard import EXTRA_HINT, require_av
from teamvla_schema.codecs._pixels import rgb_converter
from teamvla_schema.errors import SchemaError

MAGIC = b"TVSQ"
VERSION = 1
_PREFIX = struct.Struct("<4sBI")
_ENTRY = np.dtype([("size", "<u4"), ("pts", "<u4"), ("flags", "u1")])
_MAX_HEADER = 1 << 16
#: Bitstream name -> decoders to try, in order (never taken from the bytes themselves).
DECODERS: dict[str, tuple[str, ...]] = {"h264": ("h264",), "av1": ("libdav1d", "libaom-av1")}
Shape = tuple[int, int, int, int]


def check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise SchemaError(
            f"frames must be a (T, H, W, 3) uint8 array, got {frames.dtype} {frames.shape}"
        )
    t, h, w, _ = frames.shape
    if t < 1 or h < 1 or w < 1:
        raise SchemaError(f"frames must not be empty, got shape {frames.shape}")
    return np.ascontiguousarray(frames)


def output_array(out: np.ndarray | None, count: int, shape: Shape) -> np.ndarray:
    """``out`` checked as the place for ``count`` decoded frames of ``shape``, or a new array.

    A caller passes ``out`` to decode straight into memory it owns (e.g. a shared
    cache slot) instead of receiving a new array and copying it.
    """
    want = (count, int(shape[1]), int(shape[2]), 3)
    if out is None:
        return np.empty(want, np.uint8)
    if (
        not isinstance(out, np.ndarray)
        or out.dtype != np.uint8
        or out.shape != want
        or not out.flags.c_contiguous
        or not out.flags.writeable
    ):
        got = f"{out.dtype}{list(out.shape)}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"out must be a writeable C-contiguous uint8{list(want)} array, got {got}")
    return out


#: The largest keyframe interval a codec accepts (longer ones make random access slow).
MAX_GOP = 1 << 16


def check_int_param(codec: str, key: str, value: Any, *, low: int = 1, high: int = MAX_GOP) -> int:
    """``value`` as an int in ``low..high`` (bools and floats refused), else ``ValueError``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or not low <= value <= high
    ):
        raise ValueError(f"{codec} codec: {key} must be an integer in {low}..{high}, got {value!r}")
    return int(value)


def unknown_params(codec: str, params: Any, known: tuple[str, ...]) -> None:
    """Refuse anything but a mapping of the ``known`` parameter names."""
    if not hasattr(params, "keys"):
        raise ValueError(f"{codec} codec: params must be a mapping, got {type(params).__name__}")
    extra = sorted(str(k) for k in params if k not in known)
    if extra:
        raise ValueError(f"{codec} codec: unknown parameter(s) {extra}; known: {list(known)}")


def encode_stream(
    frames: np.ndarray,
    *,
    encoder: str,
    bitstream: str,
    pix_fmt: str,
    gop: int,
    options: dict[str, str],
    codec: str,
    params: dict[str, Any],
    even_min: int = 0,
) -> bytes:
    """Encode ``frames`` with the PyAV ``encoder`` and pack the packets.

    With ``even_min``, frames are edge-padded to an even size of at least ``even_min``
    pixels (what 4:2:0 encoders need); decoding crops the padding away.
    """
    av = require_av(codec)
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner to stderr otherwise
    t, h, w, _ = frames.shape
    ch, cw = h, w
    if even_min:
        ch, cw = max(even_min, h + h % 2), max(even_min, w + w % 2)
        if (ch, cw) != (h, w):
            frames = np.pad(frames, ((0, 0), (0, ch - h), (0, cw - w), (0, 0)), mode="edge")
    ctx: Any = av.CodecContext.create(encoder, "w")
    ctx.width, ctx.height, ctx.pix_fmt = cw, ch, pix_fmt
    ctx.time_base = Fraction(1, 30)
    ctx.framerate = Fraction(30, 1)
    ctx.gop_size = gop
    ctx.options = dict(options)
    packets: list[Any] = []
    converter = rgb_converter(av)
    for i in range(t):
        frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
        if pix_fmt != "rgb24":
            frame = converter.reformat(frame, pix_fmt)
        frame.pts = i
        frame.time_base = ctx.time_base
        packets.extend(ctx.encode(frame))
    packets.extend(ctx.encode(None))
    table = np.zeros(len(packets), _ENTRY)
    chunks = []
    for k, packet in enumerate(packets):
        payload = bytes(packet)
        table[k] = (len(payload), packet.pts, 1 if packet.is_keyframe else 0)
        chunks.append(payload)
    extradata = bytes(ctx.extradata or b"")
    body = extradata + b"".join(chunks)
    header = {
        "codec": codec,
        "bitstream": bitstream,
        "frames": t,
        "height": h,
        "width": w,
        "coded_height": ch,
        "coded_width": cw,
        "packets": len(packets),
        "extradata": len(extradata),
        "crc32": zlib.crc32(body),
        "params": params,
    }
    return frame_header(MAGIC, VERSION, header) + table.tobytes() + body


class _Parsed:
    def __init__(self, header: dict[str, Any], table: np.ndarray, extradata: bytes, body: bytes):
        self.header = header
        self.table = table
        self.extradata = extradata
        offsets = np.zeros(len(table) + 1, np.int64)
        np.cumsum(table["size"], out=offsets[1:])
        self.offsets = offsets
        self.body = body

    def packet(self, k: int) -> bytes:
        return self.body[int(self.offsets[k]) : int(self.offsets[k + 1])]


# ---------------------------------------------------------------- framing shared by both streams
# (this one and codecs._predictive_stream): magic | version u8 | header length u32 | JSON header


def frame_header(magic: bytes, version: int, header: dict[str, Any]) -> bytes:
    """The prefix and JSON header of a stream."""
    head = json.dumps(header, sort_keys=True).encode()
    return _PREFIX.pack(magic, version, len(head)) + head


def header_int(header: dict[str, Any], key: str, low: int, high: int, codec: str) -> int:
    """``header[key]``, which must be an int in ``low..high`` (else :class:`SchemaError`)."""
    value = header.get(key)
    if type(value) is not int or not low <= value <= high:
        raise SchemaError(f"corrupt {codec} header: {key}={value!r} (expected {low}..{high})")
    return value


def read_header(data: Any, codec: str, magic: bytes, version: int) -> tuple[dict[str, Any], int]:
    """The JSON header of a stream and where what follows it starts.

    ``data`` is anything with ``len`` and slicing (``bytes``, a ``FileRange``);
    only the prefix and the header are read.
    """
    size = len(data)
    if size < _PREFIX.size:
        raise SchemaError(f"{codec} data is truncated ({size} bytes)")
    got, got_version, head_len = _PREFIX.unpack(bytes(data[: _PREFIX.size]))
    if got != magic or got_version != version:
        raise SchemaError(f"not {codec} codec data (bad magic/version {got!r} v{got_version})")
    if head_len > _MAX_HEADER or _PREFIX.size + head_len > size:
        raise SchemaError(f"{codec} data is truncated or has a corrupt header length")
    try:
        header = json.loads(bytes(data[_PREFIX.size : _PREFIX.size + head_len]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"corrupt {codec} codec header: {exc}") from None
    if not isinstance(header, dict):
        raise SchemaError(f"corrupt {codec} codec header: not a JSON object")
    return header, _PREFIX.size + head_len


def header_shape(header: dict[str, Any], shape: Shape, codec: str) -> Shape:
    """The ``(T, H, W, 3)`` the header records, which must be the ``shape`` the caller expects."""
    expected = tuple(int(s) for s in shape)
    if len(expected) != 4 or expected[3] != 3:
        raise SchemaError(f"expected shape must be (T, H, W, 3), got {shape}")
    found = (
        header_int(header, "frames", 1, 1 << 31, codec),
        header_int(header, "height", 1, 1 << 16, codec),
        header_int(header, "width", 1, 1 << 16, codec),
        3,
    )
    if found != expected:
        raise SchemaError(f"{codec} data holds frames of shape {found}, expected {expected}")
    return found


def parse(data: bytes, codec: str, shape: Shape) -> _Parsed:
    """Check ``data`` against the expected ``shape`` (T, H, W, 3) and split it."""
    data = bytes(data)
    header, start = read_header(data, codec, MAGIC, VERSION)
    if header.get("codec") != codec or header.get("bitstream") not in DECODERS:
        raise SchemaError(
            f"data was written by codec {header.get('codec')!r} "
            f"({header.get('bitstream')!r}), not {codec!r}"
        )
    found = header_shape(header, shape, codec)
    header_int(header, "coded_height", found[1], found[1] + 64, codec)
    header_int(header, "coded_width", found[2], found[2] + 64, codec)
    n = header_int(header, "packets", 1, 2 * found[0] + 16, codec)
    n_extra = header_int(header, "extradata", 0, 1 << 20, codec)
    crc = header_int(header, "crc32", 0, (1 << 32) - 1, codec)
    body_start = start + n * _ENTRY.itemsize
    if body_start + n_extra > len(data):
        raise SchemaError(f"{codec} data is truncated (packet table)")
    table = np.frombuffer(data, _ENTRY, count=n, offset=start)
    body = data[body_start + n_extra :]
    if int(table["size"].sum(dtype=np.int64)) != len(body):
        raise SchemaError(
            f"{codec} data is truncated or padded: packets hold "
            f"{int(table['size'].sum(dtype=np.int64))} bytes, found {len(body)}"
        )
    if zlib.crc32(data[body_start:]) != crc:
        raise SchemaError(f"{codec} data is corrupt (CRC-32 mismatch)")
    if n and int(table["pts"].max()) >= found[0]:
        raise SchemaError(f"corrupt {codec} packet table: frame index out of range")
    return _Parsed(header, table, data[body_start : body_start + n_extra], body)


def stream_params(data: bytes, codec: str, shape: Shape) -> Any:
    """The parameters recorded in the stream's own header (after checking it against ``shape``)."""
    return parse(data, codec, shape).header.get("params")


def _decoder(av: Any, bitstream: str, extradata: bytes) -> Any:
    last: Exception | None = None
    for name in DECODERS[bitstream]:
        try:
            ctx = av.CodecContext.create(name, "r")
        except Exception as exc:  # codec not built into this PyAV wheel
            last = exc
            continue
        if extradata:
            ctx.extradata = extradata
        # One decoding thread: a multi-threaded libdav1d context freed before the end of its
        # stream (decode_range stops once it has its frames) waits for its worker threads while
        # holding the GIL, and they need the GIL to free PyAV's packet buffers -- a deadlock seen
        # after a few hundred ranges. Loader workers decode in parallel processes anyway.
        ctx.thread_count = 1
        return ctx
    raise ImportError(f"PyAV has no {bitstream} decoder ({last}): {EXTRA_HINT}")


#: Decoded frames converted to RGB together (one swscale call for a group of 4:2:0 frames).
CONVERT_GROUP = 16


def _decoded(
    av: Any, parsed: _Parsed, codec: str, first: int, last: int | None = None
) -> Generator[tuple[int, np.ndarray], None, None]:
    """``(frame index, rgb24 pixels)`` of every frame decoded from packet ``first`` on.

    Each frame is checked (coded size, index within the stream) before it is
    converted; decoder errors become :class:`SchemaError`. Frames are converted
    in groups of up to :data:`CONVERT_GROUP` (``codecs._pixels``); a group is
    also converted as soon as it holds frame ``last``, which the caller needs
    without waiting for more.
    """
    header, table = parsed.header, parsed.table
    t = int(header["frames"])
    ch, cw = int(header["coded_height"]), int(header["coded_width"])
    h, w = int(header["height"]), int(header["width"])
    ctx = _decoder(av, header["bitstream"], parsed.extradata)
    converter = rgb_converter(av)
    pending: list[Any] = []

    def flush() -> Iterator[tuple[int, np.ndarray]]:
        group = pending[:]
        pending.clear()
        for frame, pixels in zip(group, converter.many(group), strict=True):
            yield int(frame.pts), pixels[:h, :w]

    def take(decoded: list[Any]) -> Iterator[tuple[int, np.ndarray]]:
        for frame in decoded:
            index = frame.pts
            if frame.width != cw or frame.height != ch or index is None or not 0 <= index < t:
                raise SchemaError(f"{codec} data decodes to an unexpected frame ({frame})")
            pending.append(frame)
            if len(pending) >= CONVERT_GROUP or (last is not None and index >= last):
                yield from flush()

    try:
        for k in range(first, len(table)):
            packet = av.Packet(parsed.packet(k))
            packet.pts = packet.dts = int(table["pts"][k])
            yield from take(ctx.decode(packet))
        yield from take(ctx.decode(None))
        yield from flush()
    except av.error.FFmpegError as exc:
        raise SchemaError(f"corrupt {codec} data: {exc}") from None


def decode_frames(data: bytes, codec: str, shape: Shape, start: int, stop: int) -> np.ndarray:
    """Frames ``start:stop`` of the stream, decoded from the nearest keyframe before ``start``."""
    av = require_av(codec)
    parsed = parse(data, codec, shape)
    t, h, w, _ = (int(s) for s in shape)
    if not 0 <= start < stop <= t:
        raise IndexError(f"frame range {start}:{stop} is outside 0:{t}")
    table = parsed.table
    keys = np.flatnonzero((table["flags"] & 1) & (table["pts"] <= start))
    if len(keys) == 0:
        raise SchemaError(f"corrupt {codec} data: no keyframe before frame {start}")
    out = np.empty((stop - start, h, w, 3), np.uint8)
    seen = np.zeros(stop - start, bool)
    decoded = _decoded(av, parsed, codec, int(keys[-1]), stop - 1)
    for index, pixels in decoded:
        if start <= index < stop:
            if seen[index - start]:
                raise SchemaError(f"{codec} data decodes frame {index} twice")
            out[index - start] = pixels
            seen[index - start] = True
            if seen.all():
                decoded.close()  # the frames after ``stop`` are not needed
                break
    if not seen.all():
        raise SchemaError(
            f"{codec} data decoded {int(seen.sum())} of the {stop - start} frames {start}:{stop}"
        )
    return out


def iter_decode(data: bytes, codec: str, shape: Shape, chunk: int) -> Iterator[np.ndarray]:
    """Every frame in order, as consecutive arrays of at most ``chunk`` frames (bounded memory).

    One pass of one decoder over the whole stream; frames that arrive out of
    order, twice or not at all raise :class:`SchemaError`.
    """
    av = require_av(codec)
    parsed = parse(data, codec, shape)
    t, h, w, _ = (int(s) for s in shape)
    chunk = max(1, int(chunk))
    buf = np.empty((min(chunk, t), h, w, 3), np.uint8)
    done = filled = 0
    for index, pixels in _decoded(av, parsed, codec, 0):
        if index != done:
            raise SchemaError(f"{codec} data decodes frame {index} where frame {done} was due")
        buf[filled] = pixels
        done, filled = done + 1, filled + 1
        if filled == len(buf) or done == t:
            yield buf[:filled].copy()
            filled = 0
    if done != t:
        raise SchemaError(f"{codec} data decoded {done} of its {t} frames")
