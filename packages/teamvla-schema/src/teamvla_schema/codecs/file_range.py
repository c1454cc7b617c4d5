"""A byte range of an open file, read on demand: a codec stream read only where it is decoded."""

from __future__ import annotations

import os

from teamvla_schema.errors import SchemaError


class FileRange:
    """``size`` bytes of the open file ``fd`` from ``offset``, read with ``os.pread`` when sliced.

    Codecs whose module sets ``RANGE_READS = True`` accept one in place of
    ``bytes`` (``len(data)`` and ``data[a:b]`` are all they use), so decoding a
    few frames of a long stream reads only the groups that hold them. The
    caller keeps ``fd`` open while decoding. A range the file no longer holds
    (truncated since) raises :class:`SchemaError`.
    """

    def __init__(self, fd: int, offset: int, size: int) -> None:
        if offset < 0 or size < 0:
            raise ValueError(f"offset and size must be >= 0, got {offset} and {size}")
        self.fd, self.offset, self.size = fd, offset, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: slice, /) -> bytes:
        if not isinstance(index, slice):
            raise TypeError("FileRange supports slices only")
        start, stop, step = index.indices(self.size)
        if step != 1:
            raise ValueError("FileRange supports contiguous slices only")
        want = max(0, stop - start)
        pieces, got = [], 0
        while got < want:
            piece = os.pread(self.fd, want - got, self.offset + start + got)
            if not piece:
                raise SchemaError(
                    f"stream truncated: {want - got} of its bytes at offset "
                    f"{self.offset + start + got} are past the end of the file"
                )
            pieces.append(piece)
            got += len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)
