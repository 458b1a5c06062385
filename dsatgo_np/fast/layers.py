"""The CPU fast path of dsatgo_np.core.layers: Linear through parallel.matmul, BatchNorm from sums.

Same contracts as the plain functions of dsatgo_np/core/layers.py (tests/test_kernels.py holds them
equal). NumPy arrays only: the kernel table (dsatgo_np/kernels.py) never hands these a CuPy array.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import parallel
from ..core.layers import LinearCache, check_linear

# --- Linear ---------------------------------------------------------------------------------


def linear_forward(x, weight, bias=None):
    """layers.linear_forward with parallel.matmul (the BLAS kept off idle spinning threads).

    out = x W^T + b.  x: [N, I], weight: [O, I], bias: [O] or None -> out [N, O]."""
    check_linear(x, weight)
    out = parallel.matmul(x, weight.T)
    if bias is not None:
        out += bias
    return out, LinearCache(x, weight, bias is not None)


def linear_backward(dout, cache: LinearCache, need_dx: bool = True):
    """dout: [N, O] -> (dx [N, I] or None, {"weight": [O, I], "bias": [O]})."""
    grads = {"weight": parallel.matmul(dout.T, cache.x)}   # dout/dW[o, i] = x[n, i]
    if cache.has_bias:
        grads["bias"] = dout.sum(axis=0)
    dx = parallel.matmul(dout, cache.weight) if need_dx else None   # dout/dx = W
    return dx, grads


# --- tdBN: BatchNorm over time, batch and space -------------------------------------------
#
# dsatgo_np.core.layers writes the textbook formulas with whole-array operations: about twelve
# passes over memory and five fresh arrays as large as x per call. batchnorm_forward /
# batchnorm_backward here give the same numbers (to float32 round-off, tests/test_kernels.py)
# from per-channel sums:
#
#   forward:   mean = S1 / M,  var = S2 / M - mean^2          S1 = sum x, S2 = sum x^2
#              out  = a x + b,  a = gamma inv_std,  b = beta - a mean
#   backward:  dbeta = sum dout,  dgamma = inv_std (sum dout x - mean dbeta)
#              dx = a dout + k2 x + k3,  k2 = -a inv_std dgamma / M,  k3 = -a dbeta / M - k2 mean
#
# (the backward line is the plain core's gamma inv_std (dout - mean(dout) - xhat mean(dout xhat))
# with xhat = (x - mean) inv_std expanded). The sums are einsum reductions over contiguous rows,
# added across rows in float64; out and dx are written a few samples at a time so that their
# two operands stay in cache. The cache keeps x itself (by reference), not xhat.

BLOCK_BYTES = 1 << 19    # bytes of one operand per block of samples in the element-wise passes


class BatchNormStats(NamedTuple):
    """What the backward needs (the plain core keeps xhat instead)."""
    x: object        # (N, C, ...) the input, by reference (never mutated)
    mean: object     # (C,) batch mean
    inv_std: object  # (C,) 1 / sqrt(var + eps)
    gamma: object    # (C,) scale


def _rows(a):
    """[N, C, ...] -> (N, C, L) view, L = prod(...) (1 for [N, C])."""
    return a.reshape(a.shape[0], a.shape[1], -1)           # (N, C, L)


def _channel_sums(a, b):
    """(sum of a, sum of a * b) per channel of (N, C, L) arrays: two (C,) float64 arrays.

    einsum reduces each contiguous row of L values in a's dtype; the N row sums are then
    added in float64, so float32 round-off grows with L, not with N * L. For [N, C] (L = 1)
    einsum adds the N values of a channel in a's dtype. Both sums are taken a block of
    samples at a time (one read of a and b from memory), the blocks shared between threads.
    """
    if a.shape[2] == 1:                                    # [N, C]: no rows to reduce first
        a2, b2 = a[:, :, 0], b[:, :, 0]                    # (N, C) each
        return (np.einsum("nc->c", a2).astype(np.float64),
                np.einsum("nc,nc->c", a2, b2).astype(np.float64))
    rows = np.empty((2,) + a.shape[:2], dtype=a.dtype)     # (2, N, C) row sums

    def work(lo, hi):                                      # samples lo:hi, while in cache
        np.einsum("ncl->nc", a[lo:hi], out=rows[0, lo:hi])
        np.einsum("ncl,ncl->nc", a[lo:hi], b[lo:hi], out=rows[1, lo:hi])

    parallel.blocks(work, a.shape[0], a[0].nbytes, BLOCK_BYTES)
    sums = rows.sum(axis=1, dtype=np.float64)              # (2, C)
    return sums[0], sums[1]


def _per_value(v, like):
    """(C,) float64 -> (C*L,) in like's dtype: channel c's value repeated L times.

    A full row broadcast over the samples lets NumPy run one inner loop of C*L values per
    sample, where a (C, 1) operand costs a loop call per row of L (3x slower for L = 784).
    """
    return np.repeat(v.astype(like.dtype), like.shape[2])  # (C*L,)


def batchnorm_forward(x, gamma, beta, eps: float = 1e-5):
    """layers.batchnorm_forward's contract and numbers (to round-off), in two passes over x.

    x: [N, C, ...]. Returns (out, BatchNormStats, mean (C,), var (C,)), var biased.
    """
    x3 = _rows(x)                                          # (N, C, L)
    m = x3.shape[0] * x3.shape[2]                          # values per channel
    s1, s2 = _channel_sums(x3, x3)                         # sum x, sum x^2: (C,) float64
    mean = s1 / m
    var = s2 / m - mean * mean                             # biased, as PyTorch normalises
    if (var <= 1e-3 * mean * mean).any():                  # float32 cancellation: two passes
        centred = x3 - mean[:, None].astype(x.dtype)
        var = _channel_sums(centred, centred)[1] / m
    var = np.maximum(var, 0.0)
    inv_std = 1.0 / np.sqrt(var + eps)                     # (C,) float64
    a = _per_value(gamma * inv_std, x3)                   # (C*L,) scale
    b = _per_value(beta - mean * gamma * inv_std, x3)      # (C*L,) shift
    x2 = x3.reshape(x3.shape[0], -1)                       # (N, C*L)
    out = np.empty_like(x2)                                # (N, C*L)

    def affine(lo, hi):                                    # out = a x + b, samples lo:hi
        o = np.multiply(x2[lo:hi], a, out=out[lo:hi])
        o += b

    parallel.blocks(affine, x2.shape[0], x2[0].nbytes, BLOCK_BYTES)
    dt = x.dtype
    cache = BatchNormStats(x, mean.astype(dt), inv_std.astype(dt), gamma)
    return out.reshape(x.shape), cache, mean.astype(dt), var.astype(dt)


def _backward_coefficients(d3, x3, c: BatchNormStats, m: int):
    """(dgamma, dbeta, a, k2, k3), each (C,) float64, from (N, C, L) dout and x, m values per
    channel: dx = a dout + k2 x + k3 (the comment above batchnorm_forward)."""
    mean, inv_std = c.mean.astype(np.float64), c.inv_std.astype(np.float64)
    dbeta, dx_sum = _channel_sums(d3, x3)                  # sum dout, sum dout x: (C,) float64
    dgamma = inv_std * (dx_sum - mean * dbeta)
    a = c.gamma * inv_std                                  # dout/dx at fixed statistics
    k2 = -a * inv_std * dgamma / m                         # through mean(dout xhat)
    k3 = -a * dbeta / m - k2 * mean                        # through mean(dout)
    return dgamma, dbeta, a, k2, k3


def batchnorm_backward(dout, cache: BatchNormStats):
    """layers.batchnorm_backward's contract and numbers (to round-off), in two passes.

    dout: [N, C, ...] -> (dx, {"weight": dgamma (C,), "bias": dbeta (C,)}).
    """
    d3, x3 = _rows(dout), _rows(cache.x)                   # (N, C, L) each
    m = d3.shape[0] * d3.shape[2]
    dgamma, dbeta, a, k2, k3 = _backward_coefficients(d3, x3, cache, m)
    a, k2, k3 = (_per_value(v, d3) for v in (a, k2, k3))   # (C*L,) each
    d2, x2 = d3.reshape(d3.shape[0], -1), x3.reshape(x3.shape[0], -1)   # (N, C*L) each
    dx = np.empty_like(d2)                                 # (N, C*L)

    def combine(lo, hi):                                   # dx = a dout + k2 x + k3, samples lo:hi
        o = np.multiply(d2[lo:hi], a, out=dx[lo:hi])
        o += np.multiply(x2[lo:hi], k2)                    # a block-sized temporary, in cache
        o += k3

    parallel.blocks(combine, d2.shape[0], d2[0].nbytes, BLOCK_BYTES)
    dt = dout.dtype
    return dx.reshape(dout.shape), {"weight": dgamma.astype(dt), "bias": dbeta.astype(dt)}


def batchnorm_backward_static(dout, cache: BatchNormStats):
    """Backward of BatchNorm over T copies of one input x[0] (a direct-encoded layer), whose
    forward ran on x[0] alone (cache.x = x[0], [B, C, ...]). dout: [T, B, C, ...].

    The per-channel sums over T and B are sums over B of D = sum_t dout[t], so
        dx[t] = a dout[t] + (k2 x[0] + k3)
    with the coefficients of batchnorm_backward for M = T * B * L values per channel; the
    bracket is the same at every step and is computed once. Same numbers (to round-off) as
    batchnorm_backward on the T copies.
    """
    T = dout.shape[0]
    d3, x3 = _rows(dout.sum(axis=0)), _rows(cache.x)       # (B, C, L) each
    m = T * x3.shape[0] * x3.shape[2]
    dgamma, dbeta, a, k2, k3 = _backward_coefficients(d3, x3, cache, m)
    a, k2, k3 = (_per_value(v, d3) for v in (a, k2, k3))   # (C*L,) each
    B = x3.shape[0]
    x2, d3t = x3.reshape(B, -1), dout.reshape(T, B, -1)    # (B, C*L), (T, B, C*L)
    dx = np.empty_like(d3t)                                # (T, B, C*L)

    def combine(lo, hi):                                   # samples lo:hi, every step
        shared = np.multiply(x2[lo:hi], k2)                # k2 x[0] + k3, in cache for all t
        shared += k3
        for t in range(T):
            o = np.multiply(d3t[t, lo:hi], a, out=dx[t, lo:hi])
            o += shared

    parallel.blocks(combine, B, x2[0].nbytes, BLOCK_BYTES)
    dt = dout.dtype
    return dx.reshape(dout.shape), {"weight": dgamma.astype(dt), "bias": dbeta.astype(dt)}


def batchnorm_eval(x, gamma, beta, running_mean, running_var, eps: float = 1e-5):
    """Inference BatchNorm with the running statistics (no cache: nothing to differentiate).

    out = a x + b with a = gamma / sqrt(running_var + eps), b = beta - running_mean a.
    """
    x3 = _rows(x)                                          # (N, C, L)
    scale = gamma / np.sqrt(running_var + eps)             # (C,)
    a = _per_value(scale, x3)                              # (C*L,)
    b = _per_value(beta - running_mean * scale, x3)        # (C*L,)
    x2 = x3.reshape(x3.shape[0], -1)                       # (N, C*L)
    out = np.multiply(x2, a)
    out += b
    return out.reshape(x.shape)


