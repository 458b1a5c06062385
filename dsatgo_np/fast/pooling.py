"""The CPU fast path of average pooling (dsatgo_np.core.pooling states it plainly).

Same contract and, for finite inputs, the same numbers; a block of samples at a time, the
blocks shared between CPU threads (parallel.py). NumPy arrays only.
"""
from __future__ import annotations

import numpy as np

from . import parallel
from ..core.conv import check_dout
from ..core.pooling import AvgPoolCache, check_avgpool


def avgpool2d_forward(x, kernel=2):
    """pooling.avgpool2d_forward: the k rows of each window added first, then the k columns."""
    check_avgpool(x, kernel)
    N, C, H, W = x.shape
    k = kernel
    # The k rows of each window are added first, whole rows of W values at a time, then the k
    # columns, strided adds over 1/k of the data: fewer strided inner loops than k*k adds of
    # (n, C, OH, OW) slices, and 10x faster than .mean over a (N, C, OH, k, OW, k) view. A few
    # samples at a time, so that the row sums stay in cache.
    out = np.empty((N, C, H // k, W // k), dtype=x.dtype)  # (N, C, OH, OW)

    def work(lo, hi):                                       # samples lo:hi
        xs = x[lo:hi]
        rows = _strided_sum([xs[:, :, i::k] for i in range(k)])            # (n, C, OH, W)
        o = _strided_sum([rows[..., j::k] for j in range(k)], out[lo:hi])  # (n, C, OH, OW)
        o *= 1.0 / (k * k)

    parallel.blocks(work, N, out[0].nbytes)
    return out, AvgPoolCache(tuple(x.shape), k)


def _strided_sum(parts, out=None):
    """parts[0] + parts[1] + ..., into out (a new array if None)."""
    if len(parts) == 1:                                     # kernel 1: a copy
        if out is None:
            return parts[0].copy()
        np.copyto(out, parts[0])
        return out
    out = np.add(parts[0], parts[1], out=out)
    for part in parts[2:]:
        out += part
    return out


def _spread(k: int, OW: int, dtype):
    """(OW, k * W) matrix, W = k OW: row x holds 1/k^2 at columns i W + k x + j (i, j < k)."""
    W = k * OW
    u = np.zeros((OW, k, W), dtype=dtype)
    for j in range(k):
        u[np.arange(OW), :, k * np.arange(OW) + j] = 1.0 / (k * k)
    return u.reshape(OW, k * W)


def avgpool2d_backward(dout, cache):
    """pooling.avgpool2d_backward's result, as one matrix product.

    The k rows k y .. k y + k - 1 of dx lie one after the other in memory, so with dout as
    rows of OW values and dx as rows of k W values, dx = dout @ U (U from _spread: each value
    of dout times 1/k^2 into its window's k*k cells, plus products with zero). The plain core's
    k*k strided copies run an inner loop of only OW values each; the BLAS runs long rows on
    every core (bench/bench_conv.py --pool). Exact for finite dout: the zeros add nothing.
    """
    N, C, H, W = cache.x_shape
    k = cache.kernel
    check_dout(dout, (N, C, H // k, W // k))
    dx = np.empty(cache.x_shape, dtype=dout.dtype)          # (N, C, H, W)
    d2 = np.ascontiguousarray(dout).reshape(-1, W // k)     # (N C OH, OW)
    parallel.matmul(d2, _spread(k, W // k, dout.dtype), out=dx.reshape(-1, k * W),
                    split=True)          # memory-bound: no need of the BLAS's threads
    return dx
