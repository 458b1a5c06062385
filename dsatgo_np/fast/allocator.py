"""Keep freed array memory in the process, so that the next training step reuses it.

glibc's malloc returns every block above its mmap threshold to the system on free, so each
training step maps fresh zeroed pages for its large arrays and faults on every first touch.
``keep_freed_memory()`` raises the mmap and trim thresholds to 1 GiB (peak memory unchanged;
what is freed is kept for reuse, as PyTorch's CPU allocator does); docs/PERFORMANCE.md has
its measured effect. It changes the whole process's policy, so it is opt-in: call it, or set
``DSATGO_MALLOC=keep`` before importing dsatgo_np (the training command, a process of its
own, calls it unless ``DSATGO_MALLOC=system``). Linux with glibc only; elsewhere it returns
False.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1     # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30

_applied = None


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as described above; True if it was applied."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("DSATGO_MALLOC", "").strip().lower() == "system":
        return False                        # the user's word beats the training command's call
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):       # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = (bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES))
                and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)))
    return _applied
