"""Stateless time-distributed layers as forward/backward pairs.

Every function works on arrays whose leading axis merges time and batch, [N, ...] with
N = T * B: a layer without memory treats the T steps like T more samples, so one matrix
product serves all steps at once. Convolution and pooling live in conv.py.

Each forward returns (out, cache); each backward takes (dout, cache) and returns dx, or
(dx, grads) with grads keyed like the layer's parameters.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import parallel
from .backend import get_xp


# --- Linear ---------------------------------------------------------------------------------

class LinearCache(NamedTuple):
    x: object        # (N, I) input
    weight: object   # (O, I) PyTorch layout
    has_bias: bool


def linear_forward(x, weight, bias=None):
    """out = x W^T + b.  x: [N, I], weight: [O, I], bias: [O] or None -> out [N, O]."""
    if x.ndim != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"linear: input of shape {tuple(x.shape)} does not fit a weight of shape "
                         f"{tuple(weight.shape)}; expected [N, {weight.shape[1]}] (flatten first?)")
    out = parallel.matmul(x, weight.T, xp=get_xp(x))
    if bias is not None:
        out += bias
    return out, LinearCache(x, weight, bias is not None)


def linear_backward(dout, cache: LinearCache, need_dx: bool = True):
    """dout: [N, O] -> (dx [N, I] or None, {"weight": [O, I], "bias": [O]})."""
    xp = get_xp(dout)
    grads = {"weight": parallel.matmul(dout.T, cache.x, xp=xp)}   # dout/dW[o, i] = x[n, i]
    if cache.has_bias:
        grads["bias"] = dout.sum(axis=0)
    dx = parallel.matmul(dout, cache.weight, xp=xp) if need_dx else None   # dout/dx = W
    return dx, grads


# --- tdBN: BatchNorm over time, batch and space -------------------------------------------
#
# batchnorm_forward_reference / batchnorm_backward_reference write the textbook formulas with
# whole-array NumPy operations: about twelve passes over memory and five fresh arrays as large
# as x per call. batchnorm_forward / batchnorm_backward give the same numbers (to float32
# round-off, tests/test_fast_paths.py) from per-channel sums:
#
#   forward:   mean = S1 / M,  var = S2 / M - mean^2          S1 = sum x, S2 = sum x^2
#              out  = a x + b,  a = gamma inv_std,  b = beta - a mean
#   backward:  dbeta = sum dout,  dgamma = inv_std (sum dout x - mean dbeta)
#              dx = a dout + k2 x + k3,  k2 = -a inv_std dgamma / M,  k3 = -a dbeta / M - k2 mean
#
# (the backward line is the reference's gamma inv_std (dout - mean(dout) - xhat mean(dout xhat))
# with xhat = (x - mean) inv_std expanded). The sums are einsum reductions over contiguous rows,
# added across rows in float64; out and dx are written a few samples at a time so that their
# two operands stay in cache. The cache keeps x itself (by reference), not xhat.

BLOCK_BYTES = 1 << 19    # bytes of one operand per block of samples in the element-wise passes


class BatchNormCache(NamedTuple):
    """The reference's cache."""
    xhat: object     # (N, C, ...) normalised input
    inv_std: object  # (C,) 1 / sqrt(var + eps)
    gamma: object    # (C,) scale
    axes: tuple      # reduced axes: all but the channel axis 1


class BatchNormStats(NamedTuple):
    """The fast path's cache."""
    x: object        # (N, C, ...) the input, by reference (never mutated)
    mean: object     # (C,) batch mean
    inv_std: object  # (C,) 1 / sqrt(var + eps)
    gamma: object    # (C,) scale


def batchnorm_forward_reference(x, gamma, beta, eps: float = 1e-5):
    """Training-mode BatchNorm with per-channel statistics over every axis but axis 1.

    x: [N, C, ...] with N = T * B: tdBN normalises over time, batch and space together.
    Returns (out, cache, mean (C,), var (C,)): var is the biased batch variance used to
    normalise; the caller turns it into the unbiased running variance.
    """
    xp = get_xp(x)
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)             # (1, C, 1, 1) for images
    mean = x.mean(axis=axes)
    xc = x - mean.reshape(shape)
    var = (xc * xc).mean(axis=axes)                   # biased, as PyTorch normalises
    inv_std = 1.0 / xp.sqrt(var + eps)
    xhat = xc * inv_std.reshape(shape)
    out = xhat * gamma.reshape(shape) + beta.reshape(shape)
    return out, BatchNormCache(xhat, inv_std, gamma, axes), mean, var


def batchnorm_backward_reference(dout, cache: BatchNormCache):
    """dout: [N, C, ...] -> (dx, {"weight": dgamma (C,), "bias": dbeta (C,)}).

    With M values per channel (DERIVATIONS.md section 4):
        dx = gamma * inv_std * (dout - mean(dout) - xhat * mean(dout * xhat))
    """
    c = cache
    shape = (1, -1) + (1,) * (dout.ndim - 2)
    dbeta = dout.sum(axis=c.axes)
    dgamma = (dout * c.xhat).sum(axis=c.axes)
    m = dout.size // dout.shape[1]
    dx = dout - (dbeta / m).reshape(shape) - c.xhat * (dgamma / m).reshape(shape)
    dx *= (c.gamma * c.inv_std).reshape(shape)
    return dx, {"weight": dgamma, "bias": dbeta}


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
    xp = get_xp(a)
    if a.shape[2] == 1:                                    # [N, C]: no rows to reduce first
        a2, b2 = a[:, :, 0], b[:, :, 0]                    # (N, C) each
        return (xp.einsum("nc->c", a2).astype(xp.float64),
                xp.einsum("nc,nc->c", a2, b2).astype(xp.float64))
    rows = xp.empty((2,) + a.shape[:2], dtype=a.dtype)     # (2, N, C) row sums

    def work(lo, hi):                                      # samples lo:hi, while in cache
        xp.einsum("ncl->nc", a[lo:hi], out=rows[0, lo:hi])
        xp.einsum("ncl,ncl->nc", a[lo:hi], b[lo:hi], out=rows[1, lo:hi])

    parallel.blocks(work, a.shape[0], a[0].nbytes, BLOCK_BYTES, xp=xp)
    sums = rows.sum(axis=1, dtype=xp.float64)              # (2, C)
    return sums[0], sums[1]


def _per_value(v, like):
    """(C,) float64 -> (C*L,) in like's dtype: channel c's value repeated L times.

    A full row broadcast over the samples lets NumPy run one inner loop of C*L values per
    sample, where a (C, 1) operand costs a loop call per row of L (3x slower for L = 784).
    """
    xp = get_xp(like)
    return xp.repeat(v.astype(like.dtype), like.shape[2])  # (C*L,)


def batchnorm_forward(x, gamma, beta, eps: float = 1e-5):
    """batchnorm_forward_reference's contract and numbers (to round-off), in two passes over x.

    x: [N, C, ...]. Returns (out, BatchNormStats, mean (C,), var (C,)), var biased.
    """
    xp = get_xp(x)
    x3 = _rows(x)                                          # (N, C, L)
    m = x3.shape[0] * x3.shape[2]                          # values per channel
    s1, s2 = _channel_sums(x3, x3)                         # sum x, sum x^2: (C,) float64
    mean = s1 / m
    var = s2 / m - mean * mean                             # biased, as PyTorch normalises
    if bool((var <= 1e-3 * mean * mean).any()):            # float32 cancellation: two passes
        centred = x3 - mean[:, None].astype(x.dtype)
        var = _channel_sums(centred, centred)[1] / m
    var = xp.maximum(var, 0.0)
    inv_std = 1.0 / xp.sqrt(var + eps)                     # (C,) float64
    a = _per_value(gamma * inv_std, x3)                   # (C*L,) scale
    b = _per_value(beta - mean * gamma * inv_std, x3)      # (C*L,) shift
    x2 = x3.reshape(x3.shape[0], -1)                       # (N, C*L)
    out = xp.empty_like(x2)                                # (N, C*L)

    def affine(lo, hi):                                    # out = a x + b, samples lo:hi
        o = xp.multiply(x2[lo:hi], a, out=out[lo:hi])
        o += b

    parallel.blocks(affine, x2.shape[0], x2[0].nbytes, BLOCK_BYTES, xp=xp)
    dt = x.dtype
    cache = BatchNormStats(x, mean.astype(dt), inv_std.astype(dt), gamma)
    return out.reshape(x.shape), cache, mean.astype(dt), var.astype(dt)


def _backward_coefficients(d3, x3, c: BatchNormStats, m: int):
    """(dgamma, dbeta, a, k2, k3), each (C,) float64, from (N, C, L) dout and x, m values per
    channel: dx = a dout + k2 x + k3 (the comment above batchnorm_forward)."""
    xp = get_xp(d3)
    mean, inv_std = c.mean.astype(xp.float64), c.inv_std.astype(xp.float64)
    dbeta, dx_sum = _channel_sums(d3, x3)                  # sum dout, sum dout x: (C,) float64
    dgamma = inv_std * (dx_sum - mean * dbeta)
    a = c.gamma * inv_std                                  # dout/dx at fixed statistics
    k2 = -a * inv_std * dgamma / m                         # through mean(dout xhat)
    k3 = -a * dbeta / m - k2 * mean                        # through mean(dout)
    return dgamma, dbeta, a, k2, k3


def batchnorm_backward(dout, cache: BatchNormStats):
    """batchnorm_backward_reference's contract and numbers (to round-off), in two passes.

    dout: [N, C, ...] -> (dx, {"weight": dgamma (C,), "bias": dbeta (C,)}).
    """
    xp = get_xp(dout)
    d3, x3 = _rows(dout), _rows(cache.x)                   # (N, C, L) each
    m = d3.shape[0] * d3.shape[2]
    dgamma, dbeta, a, k2, k3 = _backward_coefficients(d3, x3, cache, m)
    a, k2, k3 = (_per_value(v, d3) for v in (a, k2, k3))   # (C*L,) each
    d2, x2 = d3.reshape(d3.shape[0], -1), x3.reshape(x3.shape[0], -1)   # (N, C*L) each
    dx = xp.empty_like(d2)                                 # (N, C*L)

    def combine(lo, hi):                                   # dx = a dout + k2 x + k3, samples lo:hi
        o = xp.multiply(d2[lo:hi], a, out=dx[lo:hi])
        o += xp.multiply(x2[lo:hi], k2)                    # a block-sized temporary, in cache
        o += k3

    parallel.blocks(combine, d2.shape[0], d2[0].nbytes, BLOCK_BYTES, xp=xp)
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
    xp = get_xp(dout)
    T = dout.shape[0]
    d3, x3 = _rows(dout.sum(axis=0)), _rows(cache.x)       # (B, C, L) each
    m = T * x3.shape[0] * x3.shape[2]
    dgamma, dbeta, a, k2, k3 = _backward_coefficients(d3, x3, cache, m)
    a, k2, k3 = (_per_value(v, d3) for v in (a, k2, k3))   # (C*L,) each
    B = x3.shape[0]
    x2, d3t = x3.reshape(B, -1), dout.reshape(T, B, -1)    # (B, C*L), (T, B, C*L)
    dx = xp.empty_like(d3t)                                # (T, B, C*L)

    def combine(lo, hi):                                   # samples lo:hi, every step
        shared = xp.multiply(x2[lo:hi], k2)                # k2 x[0] + k3, in cache for all t
        shared += k3
        for t in range(T):
            o = xp.multiply(d3t[t, lo:hi], a, out=dx[t, lo:hi])
            o += shared

    parallel.blocks(combine, B, x2[0].nbytes, BLOCK_BYTES, xp=xp)
    dt = dout.dtype
    return dx.reshape(dout.shape), {"weight": dgamma.astype(dt), "bias": dbeta.astype(dt)}


def batchnorm_eval(x, gamma, beta, running_mean, running_var, eps: float = 1e-5):
    """Inference BatchNorm with the running statistics (no cache: nothing to differentiate).

    out = a x + b with a = gamma / sqrt(running_var + eps), b = beta - running_mean a.
    """
    xp = get_xp(x)
    x3 = _rows(x)                                          # (N, C, L)
    scale = gamma / xp.sqrt(running_var + eps)             # (C,)
    a = _per_value(scale, x3)                              # (C*L,)
    b = _per_value(beta - running_mean * scale, x3)        # (C*L,)
    x2 = x3.reshape(x3.shape[0], -1)                       # (N, C*L)
    out = xp.multiply(x2, a)
    out += b
    return out.reshape(x.shape)


# --- Dropout (one mask for all time steps) -------------------------------------------------

def dropout_forward(x, p: float, rng):
    """Inverted dropout on [T, B, ...]: one mask per sample, shared by all T steps.

    Sharing the mask over time keeps a dropped neuron silent for the whole sequence, as
    SNN libraries do; a fresh mask per step would act like input noise instead.
    rng: a numpy Generator (or cupy RandomState on GPU).
    """
    xp = get_xp(x)
    keep = (rng.random(x.shape[1:]) >= p).astype(x.dtype) / (1.0 - p)   # (B, ...)
    keep = xp.asarray(keep)
    return x * keep, keep


def dropout_backward(dout, keep):
    """dout: [T, B, ...] -> dx: dout * mask (the mask already holds the 1 / (1 - p))."""
    return dout * keep
