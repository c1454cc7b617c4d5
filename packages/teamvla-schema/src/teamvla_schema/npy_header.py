"""Reading ``.npy`` array headers safely from several threads at once.

numpy parses a header's dict with ``ast.literal_eval``. On CPython 3.11 (seen on
3.11.7) the AST converter keeps its recursion depth in per-interpreter state, so
two threads parsing at once (one switched out mid-parse, e.g. by a garbage
collection running Python code) can fail with ``SystemError: AST constructor
recursion depth mismatch`` (CPython gh-106905). Episode readers inflate members
in threads, so every header is parsed under one lock: a header is a few hundred
bytes, so the lock costs nothing measurable.
"""

from __future__ import annotations

import threading
from typing import IO, Any

import numpy as np

_LOCK = threading.Lock()


def read_array_header(fh: IO[bytes], version: tuple[int, int]) -> tuple[tuple[int, ...], bool, Any]:
    """``(shape, fortran_order, dtype)`` of the header after the magic, for format ``version``
    1.0 or 2.0 (``ValueError`` for others, as numpy's own readers raise on a bad header)."""
    if version == (1, 0):
        reader = np.lib.format.read_array_header_1_0
    elif version == (2, 0):
        reader = np.lib.format.read_array_header_2_0
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    with _LOCK:
        shape, fortran, dtype = reader(fh)
    return shape, fortran, dtype
