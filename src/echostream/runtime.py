"""Process-wide settings for long-running transcription processes (the CLI and servers use them)."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def limit_heap_fragmentation(threshold: int = 256 * 1024) -> bool:
    """Serve allocations above ``threshold`` bytes with mmap, always.

    glibc raises its mmap threshold as large blocks are freed, after which tensor-sized blocks come
    from the heap and fragment it: resident memory then creeps up over hours of audio even though
    the working set is constant. A fixed threshold returns every large tensor to the system when
    freed. Returns False where this is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False
