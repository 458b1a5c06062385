"""core.update.sgd_update on a CPU, a cache-sized piece of each array at a time.

Whole-array NumPy operations would each stream every parameter, gradient and buffer from
memory; pieces of CHUNK values keep one piece's five operations in cache. The arithmetic is
the same, bit for bit (tests/test_optim.py; `python bench/bench_optim.py` times both).
"""
from __future__ import annotations

from ..core.update import sgd_update as sgd_update_whole

CHUNK = 1 << 16    # values per piece (256 KiB of float32 per array)


def sgd_update(p, g, b, lr: float, momentum: float, weight_decay: float, nesterov: bool):
    """update.sgd_update, in place, CHUNK values at a time; b: momentum buffer or None."""
    arrays = (p, g, b)
    if not all(a is None or a.flags.c_contiguous for a in arrays):
        return sgd_update_whole(p, g, b, lr, momentum, weight_decay, nesterov)
    flat = [None if a is None else a.reshape(-1) for a in arrays]           # views
    for lo in range(0, p.size, CHUNK):
        sgd_update_whole(*(None if a is None else a[lo:lo + CHUNK] for a in flat),
                         lr, momentum, weight_decay, nesterov)
