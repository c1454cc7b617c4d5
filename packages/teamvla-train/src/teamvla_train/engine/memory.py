"""Keep freed memory in the process instead of handing it back to the kernel after every step.

glibc's ``malloc`` serves a large block (a batch of images, a convolution's
activations) with a fresh ``mmap`` and returns it to the kernel on ``free``; so
does the top of the heap once more than ``M_TRIM_THRESHOLD`` of it is free. A
training step allocates and frees tens of megabytes of such blocks, and every
page of them is faulted in again on the next step. Raising the mmap threshold
to glibc's maximum (32 MiB) and the trim threshold keeps those pages in the heap
for the next step. ``benchmarks/bench_malloc.py`` on the demo's CPU training (600
steps): 13.5k -> 0.2k page faults per step, 17.9 -> 1.3 s in the kernel, 1.47x
faster. The price is that the process keeps its peak heap size until it exits
(peak RSS 876 -> 963 MB there).

Only glibc has ``mallopt``; elsewhere (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 2**20  # glibc refuses larger values on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**30  # free heap kept before the top is returned to the kernel
TOP_PAD = 64 * 2**20  # extra heap requested per sbrk, so growth takes few system calls


def retain_freed_memory() -> bool:
    """Set glibc's thresholds so freed blocks stay in the heap (see the module doc).

    Returns whether they were set: False off Linux, without glibc, or when glibc
    refused a value. Processes forked afterwards (loader workers) inherit them.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (M_TOP_PAD, TOP_PAD),
    )
    return all(mallopt(param, value) == 1 for param, value in settings)
