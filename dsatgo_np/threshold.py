"""Forward stage of DS-ATGO: the adaptive threshold (AT), METHOD.md section 3.

At every step t, one scalar per layer from the statistics of the whole tensor H[t]
(all batch elements and all neurons):

    mu[t] = mean(H[t]),  sigma[t] = std(H[t], ddof=1),  theta[t] = f_c * (mu[t] + sigma[t])

If H ~ N(mu, sigma^2) then P(H >= theta) = 1 - Phi(1) = 15.87 % for f_c = 1 (Theorem 1),
whatever the layer's scale. For inference, a running threshold per step is kept like a
BatchNorm running statistic: R[t] <- (1 - m) R[t] + m theta[t].

Constant in backward (by default): mu, sigma and theta. The option threshold_grad lets the
gradient flow through theta via threshold_vjp() (DERIVATIONS.md section 5).
"""
from __future__ import annotations

import numpy as np

from . import parallel
from .backend import get_xp


def layer_stats(h):
    """(mu, sigma) of the whole tensor h, as 0-d arrays; sigma uses ddof=1 like torch.std.

    No float() here: on a GPU that would force a device sync at every step.
    """
    xp = get_xp(h)
    mu = xp.mean(h)
    sigma = xp.std(h, ddof=1)
    return mu, sigma


ROW = 1024     # values per row sum of the fast statistics (see row_sums)


def fast_layer_stats(h):
    """threshold.layer_stats(h) in one read of h instead of np.std's five passes.

    The row sums of row_sums, taken a block of rows at a time (the blocks shared between
    threads), then stats_from_row_sums. The neuron's fast loop calls the same two functions
    while it writes H[t], so that its statistics cost no read of their own and are these bits.
    """
    xp = get_xp(h)
    if xp is not np or h.size < 2:
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


def adaptive_threshold(mu, sigma, f_c: float = 1.0):
    """theta = f_c * (mu + sigma): about 15.9 % of a Gaussian layer fires when f_c = 1."""
    return f_c * (mu + sigma)


def estimated_threshold(lam, f_c: float = 1.0, v_th: float = 1.0):
    """The ablation's "estimated" threshold f_c * sqrt(1 + lam^2) * v_th (no measured statistics).

    From the Gaussian model of H: after the first step H = lam V[t-1] + X[t] adds two terms of
    scale v_th, so its spread is about sqrt(1 + lam^2) v_th.
    """
    xp = get_xp(lam)
    return f_c * xp.sqrt(1 + lam * lam) * v_th


def update_running(running, theta, momentum: float = 0.1):
    """R <- (1 - m) R + m theta, elementwise over the T steps; returns a new array."""
    return (1 - momentum) * running + momentum * theta


def threshold_vjp(dtheta, h, mu, sigma, f_c: float = 1.0):
    """dL/dH contributed through theta = f_c (mu + sigma), given dL/dtheta (a 0-d array).

        dmu/dH_i    = 1 / N
        dsigma/dH_i = (H_i - mu) / ((N - 1) sigma)      (ddof = 1)

    so dL/dH_i = dL/dtheta * f_c * (1/N + (H_i - mu) / ((N - 1) sigma)).
    """
    n = h.size
    return dtheta * f_c * (1.0 / n + (h - mu) / ((n - 1) * sigma))
