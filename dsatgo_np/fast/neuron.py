"""The LIF neuron's CPU fast path: dsatgo_np.core.neuron's loops a cache-sized block of neurons at a time.

Same contract and, for spikes, the same bits as neuron.lif_forward / neuron.lif_backward (the
plain core that states the recurrence): tests/test_kernels.py compares them. The layer
statistics that AT and TGO take of H[t] come from row sums computed while H[t] is written
(row_sums, stats_from_row_sums), one pass instead of np.std's five.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import parallel
from ..core.neuron import LIFCache, lif_backward as lif_backward_plain, stack_steps
from ..core.threshold import layer_stats

ROW = 1024     # values per row sum of the fast statistics (see row_sums)


def fast_layer_stats(h):
    """layer_stats(h) in one read of h instead of np.std's five passes.

    The row sums of row_sums, taken a block of rows at a time (the blocks shared between
    threads), then stats_from_row_sums. The neuron's fast loop calls the same two functions
    while it writes H[t], so that its statistics cost no read of their own and are these bits.
    """
    if h.size < 2:
        return layer_stats(h)
    flat = h.reshape(-1)
    s, ss = (np.empty(flat.size // ROW, dtype=flat.dtype) for _ in range(2))   # (rows,) each

    def work(lo, hi):                                  # rows lo:hi, both sums while in cache
        row_sums(flat[lo * ROW:hi * ROW], s[lo:hi], ss[lo:hi])

    parallel.blocks(work, s.size, flat.itemsize * ROW, 64 * flat.itemsize * ROW)
    return stats_from_row_sums(flat, s, ss)


def row_sums(flat, s, ss):
    """s[r] = sum, ss[r] = sum of squares of the r-th whole row of ROW values of flat, in its
    dtype. A partial last row is left to stats_from_row_sums. The squares go through
    np.vecdot, NumPy's dot loop row by row, faster than einsum's sum of products (`python
    bench/bench_lif.py` compares the neuron's forward with these statistics, ds-atgo, and
    without, vanilla); rows this short never start a threaded BLAS, which on a loaded
    machine would wait for its second thread."""
    rows = flat[:flat.size - flat.size % ROW].reshape(-1, ROW)     # (R, ROW)
    np.einsum("ij->i", rows, out=s)
    np.vecdot(rows, rows, out=ss)


def stats_from_row_sums(flat, s, ss):
    """(mu, sigma) of flat, 0-d arrays in its dtype, from its row sums (row_sums) and its
    partial last row, all added in float64 in one fixed order, whatever the number of threads.

    sigma^2 = (sum h^2 - n mu^2) / (n - 1), ddof = 1 like torch.std. That form loses digits
    when |mu| >> sigma (float32 cancellation): then layer_stats decides.
    """
    n = flat.size
    tail = flat[s.size * ROW:].astype(np.float64)                   # the partial last row
    total = float(s.sum(dtype=np.float64) + tail.sum())
    squares = float(ss.sum(dtype=np.float64) + tail @ tail)
    mu = total / n
    var = (squares - n * mu * mu) / (n - 1)
    if not var > 1e-4 * mu * mu:                                    # cancellation, or NaN
        return layer_stats(flat)
    return np.asarray(mu, dtype=flat.dtype), np.asarray(np.sqrt(var), dtype=flat.dtype)


# A NumPy call on an array larger than the L2 cache streams it from memory, so a step written
# as ten whole-array operations reads and writes memory ten times. The neuron is element-wise
# given theta[t] and k[t], so the loops below run over blocks of BLOCK neurons, all operations
# of a block back to back while its few temporaries sit in the cache, writing every result
# into a preallocated array with out=. The backward even runs the whole time loop block by
# block, since BPTT couples a neuron only with itself. Blocks are independent, so the CPU's
# cores share them (parallel.ranges; the split falls on block boundaries). The arithmetic is
# the plain loop's, operation for operation: both give the same bits for spikes
# (tests/test_kernels.py).

BLOCK = 1 << 16          # neurons per block: 256 KiB per float32 temporary (bench/bench_lif.py)


def _blocks(n: int):
    """Consecutive slices of BLOCK neurons covering range(n)."""
    return [slice(i, min(n, i + BLOCK)) for i in range(0, n, BLOCK)]


def _each_block(n: int, work):
    """[work(blocks)] for runs of whole blocks covering range(n), one run per thread."""
    if n == 0:
        return [work([])]
    return parallel.ranges(lambda lo, hi: work([slice(b.start + lo, b.stop + lo)
                                                for b in _blocks(hi - lo)]),
                           n, grain=BLOCK)


def lif_forward(X, lam, rule: Callable, smooth: bool = False, detach_reset: bool = False,
                threshold_grad: bool = False, f_c: float = 1.0):
    """Run the neuron over time. X: [T, B, ...] input currents -> (S [T, B, ...], cache).

    Same result as neuron.lif_forward. The rule sees the whole H[t] (its statistics span
    the layer); then, block by block, fire and reset step t and charge step t + 1. A rule that
    measures H (rule.measures) gets its statistics from row sums taken in that same pass,
    while each block of H[t + 1] is still in cache: fast_layer_stats's numbers,
    without a read of its own (for blocks that hold whole rows of ROW values).
    """
    lam = np.asarray(lam, dtype=X.dtype)
    T = X.shape[0]
    H, S = (np.empty(X.shape, dtype=X.dtype) for _ in range(2))
    x, h, s = (a.reshape(T, -1) for a in (X, H, S))              # (T, M): one row per step
    measures = rule.measures
    fused = measures and BLOCK % ROW == 0
    if fused:                                                     # row sums of H[t], (T, rows)
        rs, rss = (np.empty((T, h.shape[1] // ROW), dtype=X.dtype) for _ in range(2))

    def charge_sums(t, b):                                        # row sums of block b of H[t]
        if fused:
            r = slice(b.start // ROW, b.start // ROW + (b.stop - b.start) // ROW)
            row_sums(h[t, b], rs[t, r], rss[t, r])

    def first_charge(blocks):                                     # H[0] = X[0]: V[-1] = 0
        for b in blocks:
            np.copyto(h[0, b], x[0, b])
            charge_sums(0, b)

    def fire_reset_charge(t, step, blocks):
        vb_buf = np.empty(BLOCK, dtype=X.dtype)
        for b in blocks:
            hb, sb, vb = h[t, b], s[t, b], vb_buf[:b.stop - b.start]
            if smooth:                                            # S = clip((H - theta)/k + 1/2, 0, 1)
                np.subtract(hb, step.theta, out=sb)
                sb /= step.k
                sb += 0.5
                np.clip(sb, 0.0, 1.0, out=sb)
            else:                                                 # S = Heaviside(H - theta)
                np.greater_equal(hb, step.theta, out=sb)
            if t + 1 < T:                                         # V = H (1 - S), in cache only
                np.subtract(1, sb, out=vb)
                vb *= hb
                np.multiply(vb, lam, out=h[t + 1, b])             # H[t+1] = lam V[t] + X[t+1]
                h[t + 1, b] += x[t + 1, b]
                charge_sums(t + 1, b)

    steps = []
    _each_block(h.shape[1], first_charge)
    for t in range(T):
        stats = None
        if fused and h.shape[1] > 1:
            stats = stats_from_row_sums(h[t], rs[t], rss[t])
        elif measures:
            stats = fast_layer_stats(H[t])
        step = rule(H[t], t, stats)
        steps.append(step)                                        # theta[t], k[t]: constants
        _each_block(h.shape[1], lambda blocks: fire_reset_charge(t, step, blocks))
    theta, k, mu, sigma = stack_steps(steps, np, X.dtype)       # each (T,)
    return S, LIFCache(H, S, lam, theta, k, mu, sigma, f_c, detach_reset, threshold_grad)


def lif_backward(dS, cache: LIFCache, need_dlam: bool = True):
    """BPTT through lif_forward. dS: [T, B, ...] -> (dX [T, B, ...], dlam 0-d array).

    dlam is None when need_dlam is False (a fixed decay: skips recomputing V). Same result as
    neuron.lif_backward, one block of neurons at a time over all T steps. With
    threshold_grad, dtheta[t] sums over every neuron of step t before step t - 1 can start,
    so that extension runs the plain loop.
    """
    c = cache
    if c.threshold_grad:
        return lif_backward_plain(dS, cache, need_dlam)
    T = dS.shape[0]
    dX = np.empty(dS.shape, dtype=dS.dtype)
    ds_, h_, s_, dx_ = (np.reshape(a, (T, -1)) for a in (dS, c.H, c.S, dX))  # (T, M)
    half_k = 0.5 * c.k                                           # (T,) window half-widths
    inv_k = 1 / c.k                                              # (T,) window heights

    def bptt(blocks):
        """The whole time loop for these blocks; returns dlam's terms, (blocks, T) float64."""
        n = blocks[0].stop - blocks[0].start if blocks else 0
        dv_buf, u_buf, w_buf = (np.empty(n, dtype=dS.dtype) for _ in range(3))
        in_buf = np.empty(n, dtype=bool)
        dlam = np.zeros((len(blocks), T), dtype=np.float64)    # per block and step
        for i, b in enumerate(blocks):
            m = b.stop - b.start
            dv, w, inside = dv_buf[:m], w_buf[:m], in_buf[:m]
            for t in reversed(range(T)):
                h, s, ds, dh = h_[t, b], s_[t, b], ds_[t, b], dx_[t, b]
                last = t == T - 1                                # dL/dV[T-1] = 0
                u = ds                                           # dS~ = dS - dV H
                if not (last or c.detach_reset):
                    u = np.subtract(ds, np.multiply(dv, h, out=u_buf[:m]), out=u_buf[:m])
                np.subtract(h, c.theta[t], out=w)                # g = 1[|H - theta| < k/2] / k
                np.abs(w, out=w)
                np.less(w, half_k[t], out=inside)
                np.multiply(u, inv_k[t], out=dh)                 # dH = dS~ g + dV (1 - S)
                dh *= inside
                if not last:
                    np.subtract(1, s, out=w)
                    w *= dv
                    dh += w
                if t > 0:
                    np.multiply(dh, c.lam, out=dv)               # dL/dV[t-1] = lam dH[t]
                    if need_dlam:                                # dH[t]/dlam = V[t-1]
                        np.subtract(1, s_[t - 1, b], out=w)          # = H[t-1] (1 - S[t-1])
                        w *= h_[t - 1, b]
                        dlam[i, t] = np.einsum("i,i->", dh, w)
        return dlam

    dlam = np.concatenate(_each_block(dx_.shape[1], bptt))   # (blocks, T)
    return dX, np.asarray(dlam.sum(), dtype=dS.dtype) if need_dlam else None
