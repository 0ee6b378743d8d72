"""Host memory: what the C allocator keeps after MindSpore is done with it.

Peak memory of CPU training is the first step's (graph compilation, then the step), and two glibc habits add
to it (measured: `python -m pix2pix.tools.bench`, peak RSS of unet_256 training at batch 1, about 40 MB of
1550 on a 2-core VM):
- after the first large block is freed, glibc raises the size from which blocks get their own mappings, so
  later large temporaries (numpy's, MindSpore's) are carved from the heap and kept there when freed;
  a fixed threshold (`tune_allocator`) gives them back to the system when freed;
- what compilation frees stays in the heap unless it is trimmed (`release_free_memory`).
Elsewhere than glibc (musl, macOS) both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, kept fixed

_libc: ctypes.CDLL | None | bool = False  # False: not looked up yet


def glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is False:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc = libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
        except OSError:
            _libc = None
    return _libc


def tune_allocator() -> None:
    """Blocks of 128 KiB and more in mappings of their own, returned to the system when freed."""
    libc = glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def release_free_memory() -> None:
    """Give the heap's free pages back to the system (after compiling a graph: what compilation freed)."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)
