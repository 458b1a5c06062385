"""Keep freed array memory in the process, so that the next training step reuses it.

glibc's malloc serves every block above its mmap threshold (at most 32 MiB) straight from the
operating system and hands it back on free. A training step allocates dozens of arrays of that
size (a CIFAR layer's H and S are 64 MB each at T=4, B=32) and frees them at the end, so
every step the kernel maps fresh zeroed pages and each first touch of a 4 KiB page faults:
measured with a 4 M-neuron LIF layer, 62 ms of the neuron's 2-thread forward pass went down to
39 ms once those blocks stayed in malloc's heap. ``keep_freed_memory()`` raises the mmap
threshold and the heap's trim threshold to 1 GiB; the peak memory is unchanged (the same
arrays are alive at the peak), only what is freed is kept for reuse instead of being
returned. PyTorch's CPU allocator does the equivalent caching.

It changes the policy of the whole process (a notebook that also runs PyTorch gets it too), so
nothing calls it unless asked: call ``dsatgo_np.fast.allocator.keep_freed_memory()`` or set
``DSATGO_MALLOC=keep`` before importing dsatgo_np (the training command, a process of its own,
calls it; ``DSATGO_MALLOC=system`` keeps the system's policy there too). Linux with glibc
only; elsewhere it does nothing and returns False.
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
