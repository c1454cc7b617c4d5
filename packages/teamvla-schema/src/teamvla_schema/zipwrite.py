"""A deterministic zip writer for episode files, compressing large members in parallel.

Members are compressed before anything is written, the large ones in worker
threads (zlib releases the GIL), which is why this does not go through
:mod:`zipfile`, whose writer compresses one member at a time. The output is a
plain zip: a local header (no data descriptor: sizes and CRC are known up front)
and data per member, then the central directory; ZIP64 records only where a size
or offset does not fit 32 bits. Any zip reader, ``numpy.load`` included, reads it.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

_ZIP64_LIMIT = 0xFFFFFFFF  # sizes and offsets from this value on need ZIP64 records
_ZIP64_MARKER = 0xFFFFFFFF  # what a 32-bit field holds when the value is in the ZIP64 record
# Fixed timestamps (1980-01-01 00:00:00) make files byte-identical for identical content.
_ZIP_DOS_TIME, _ZIP_DOS_DATE = 0, (0 << 9) | (1 << 5) | 1
_ZIP_EXTERNAL_ATTR = 0o100644 << 16  # a regular file, rw-r--r--, Unix host
_PARALLEL_MIN_BYTES = 1 << 18  # members this large are compressed in worker threads
_MAX_THREADS = 8


@dataclass
class _Member:
    name: bytes
    crc: int
    size: int  # uncompressed
    chunks: list[Any]  # bytes-like pieces of the stored (compressed or not) data
    method: int
    offset: int = 0

    @property
    def flags(self) -> int:
        # No data descriptor; bit 11 marks a UTF-8 name (a field name may be any identifier).
        return 0 if self.name.isascii() else 0x800

    @property
    def csize(self) -> int:
        return sum(len(c) if isinstance(c, bytes) else c.nbytes for c in self.chunks)


def _npy_header(arr: np.ndarray) -> bytes:
    fmt = np.lib.format
    buf = io.BytesIO()
    header = fmt.header_data_from_array_1_0(arr)
    try:
        fmt.write_array_header_1_0(buf, header)
    except ValueError:  # header longer than 64 KiB: only format 2.0 can hold it
        buf = io.BytesIO()
        fmt.write_array_header_2_0(buf, header)
    return buf.getvalue()


def _encode_member(name: str, arr: np.ndarray, compress: bool, level: int) -> _Member:
    """One ``.npy`` member: header + raw C-order bytes, compressed with raw deflate."""
    header = _npy_header(arr)
    data = arr.reshape(-1).view(np.uint8).data  # arr is C-contiguous: a view, no copy
    crc = zlib.crc32(data, zlib.crc32(header))
    size = len(header) + data.nbytes
    if compress:
        deflate = zlib.compressobj(level, zlib.DEFLATED, -15)
        chunks: list[Any] = [deflate.compress(header), deflate.compress(data), deflate.flush()]
        method = zipfile.ZIP_DEFLATED
    else:
        chunks = [header, data]
        method = zipfile.ZIP_STORED
    return _Member(f"{name}.npy".encode(), crc, size, chunks, method)


def encode_members(
    items: list[tuple[str, np.ndarray]], compress: bool, level: int
) -> list[_Member]:
    big = [i for i, (_, arr) in enumerate(items) if compress and arr.nbytes >= _PARALLEL_MIN_BYTES]
    threads = min(len(big), _MAX_THREADS, os.cpu_count() or 1)
    if threads < 2:
        return [_encode_member(name, arr, compress, level) for name, arr in items]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="teamvla-deflate") as pool:
        futures = {i: pool.submit(_encode_member, *items[i], compress, level) for i in big}
        return [
            futures[i].result() if i in futures else _encode_member(name, arr, compress, level)
            for i, (name, arr) in enumerate(items)
        ]


def write_zip(fh: Any, members: list[_Member]) -> None:
    offset = 0
    for m in members:
        m.offset = offset
        csize = m.csize
        zip64 = m.size >= _ZIP64_LIMIT or csize >= _ZIP64_LIMIT
        extra = struct.pack("<HHQQ", 1, 16, m.size, csize) if zip64 else b""
        local = struct.pack(
            "<4s5H3L2H",
            b"PK\x03\x04",
            45 if zip64 else 20,  # version needed to extract
            m.flags,
            m.method,
            _ZIP_DOS_TIME,
            _ZIP_DOS_DATE,
            m.crc,
            _ZIP64_MARKER if zip64 else csize,
            _ZIP64_MARKER if zip64 else m.size,
            len(m.name),
            len(extra),
        )
        fh.write(local + m.name + extra)
        for chunk in m.chunks:
            fh.write(chunk)
        offset += len(local) + len(m.name) + len(extra) + csize
    central_start = offset
    for m in members:
        csize = m.csize
        values = [m.size, csize, m.offset]
        big = [v for v in values if v >= _ZIP64_LIMIT]
        extra = struct.pack(f"<HH{len(big)}Q", 1, 8 * len(big), *big) if big else b""
        size32, csize32, offset32 = (_ZIP64_MARKER if v >= _ZIP64_LIMIT else v for v in values)
        entry = struct.pack(
            "<4s4B4HL2L5HLL",
            b"PK\x01\x02",
            45 if big else 20,  # version made by
            3,  # host system: Unix (so that external_attr holds Unix permissions)
            45 if big else 20,  # version needed to extract
            0,
            m.flags,
            m.method,
            _ZIP_DOS_TIME,
            _ZIP_DOS_DATE,
            m.crc,
            csize32,
            size32,
            len(m.name),
            len(extra),
            0,  # comment length
            0,  # disk number
            0,  # internal attributes
            _ZIP_EXTERNAL_ATTR,
            offset32,
        )
        fh.write(entry + m.name + extra)
        offset += len(entry) + len(m.name) + len(extra)
    central_size = offset - central_start
    count = len(members)
    if count >= 0xFFFF or central_start >= _ZIP64_LIMIT or central_size >= _ZIP64_LIMIT:
        fh.write(
            struct.pack(
                "<4sQ2H2L4Q",
                b"PK\x06\x06",
                44,
                45,
                45,
                0,
                0,
                count,
                count,
                central_size,
                central_start,
            )
        )
        fh.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, offset, 1))
    fh.write(
        struct.pack(
            "<4s4H2LH",
            b"PK\x05\x06",
            0,
            0,
            min(count, 0xFFFF),
            min(count, 0xFFFF),
            _ZIP64_MARKER if central_size >= _ZIP64_LIMIT else central_size,
            _ZIP64_MARKER if central_start >= _ZIP64_LIMIT else central_start,
            0,
        )
    )
