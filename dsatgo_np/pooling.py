"""Pooling as forward/backward pairs: average, max and global average pooling.

Like conv.py, every function works on merged time-batch arrays ``[N, C, H, W]`` with
``N = T * B``. Average pooling, the reference networks' pooling, runs a block of samples at a
time, the blocks shared between CPU threads (parallel.py).
"""
from __future__ import annotations

from typing import NamedTuple

from . import parallel
from .backend import get_xp
from .conv import check_dout


def _check_4d(x, name):
    if x.ndim != 4:
        raise ValueError(f"{name} expects x of shape [N, C, H, W], got shape {tuple(x.shape)}: "
                         "merge time and batch first with x.reshape(T * B, C, H, W)")


class AvgPoolCache(NamedTuple):
    x_shape: tuple  # (N, C, H, W)
    kernel: int


def avgpool2d_forward(x, kernel=2):
    """out[n, c, y, x] = mean of the kernel x kernel block at (k*y, k*x); stride = kernel.

    x: (N, C, H, W) with H and W divisible by kernel. Returns out (N, C, H/k, W/k), cache.
    """
    xp = get_xp(x)
    _check_4d(x, "avgpool2d")
    N, C, H, W = x.shape
    k = kernel
    if H % k or W % k:
        raise ValueError(f"avgpool2d with kernel {k} needs H and W divisible by {k}, got x "
                         f"{tuple(x.shape)}: pad or crop the input, or pick a kernel that divides "
                         "them (e.g. padding=1 on the previous 3x3 conv keeps H and W)")
    # The k rows of each window are added first, whole rows of W values at a time, then the k
    # columns, strided adds over 1/k of the data: fewer strided inner loops than k*k adds of
    # (n, C, OH, OW) slices, and 10x faster than .mean over a (N, C, OH, k, OW, k) view. A few
    # samples at a time, so that the row sums stay in cache.
    out = xp.empty((N, C, H // k, W // k), dtype=x.dtype)  # (N, C, OH, OW)

    def work(lo, hi):                                       # samples lo:hi
        xs = x[lo:hi]
        rows = _strided_sum(xp, [xs[:, :, i::k] for i in range(k)])            # (n, C, OH, W)
        o = _strided_sum(xp, [rows[..., j::k] for j in range(k)], out[lo:hi])  # (n, C, OH, OW)
        o *= 1.0 / (k * k)

    parallel.blocks(work, N, out[0].nbytes, xp=xp)
    return out, AvgPoolCache(tuple(x.shape), k)


def _strided_sum(xp, parts, out=None):
    """parts[0] + parts[1] + ..., into out (a new array if None)."""
    if len(parts) == 1:                                     # kernel 1: a copy
        if out is None:
            return parts[0].copy()
        xp.copyto(out, parts[0])
        return out
    out = xp.add(parts[0], parts[1], out=out)
    for part in parts[2:]:
        out += part
    return out


def avgpool2d_backward_reference(dout, cache):
    """dL/dx[n, c, k*y + i, k*x + j] = dout[n, c, y, x] / k^2: k*k strided copies."""
    xp = get_xp(dout)
    k = cache.kernel
    dx = xp.empty(cache.x_shape, dtype=dout.dtype)          # (N, C, H, W)
    for i in range(k):
        for j in range(k):
            dx[:, :, i::k, j::k] = dout * (1.0 / (k * k))
    return dx


def _spread(xp, k: int, OW: int, dtype):
    """(OW, k * W) matrix, W = k OW: row x holds 1/k^2 at columns i W + k x + j (i, j < k)."""
    W = k * OW
    u = xp.zeros((OW, k, W), dtype=dtype)
    for j in range(k):
        u[xp.arange(OW), :, k * xp.arange(OW) + j] = 1.0 / (k * k)
    return u.reshape(OW, k * W)


def avgpool2d_backward(dout, cache):
    """avgpool2d_backward_reference's result, as one matrix product.

    The k rows k y .. k y + k - 1 of dx lie one after the other in memory, so with dout as
    rows of OW values and dx as rows of k W values, dx = dout @ U (U from _spread: each value
    of dout times 1/k^2 into its window's k*k cells, plus products with zero). The reference's
    k*k strided copies run an inner loop of only OW values each; the BLAS runs long rows on
    every core (bench/bench_conv.py --pool). Exact for finite dout: the zeros add nothing.
    """
    xp = get_xp(dout)
    N, C, H, W = cache.x_shape
    k = cache.kernel
    check_dout(dout, (N, C, H // k, W // k))
    dx = xp.empty(cache.x_shape, dtype=dout.dtype)          # (N, C, H, W)
    d2 = xp.ascontiguousarray(dout).reshape(-1, W // k)     # (N C OH, OW)
    parallel.matmul(d2, _spread(xp, k, W // k, dout.dtype), out=dx.reshape(-1, k * W),
                    split=True, xp=xp)          # memory-bound: no need of the BLAS's threads
    return dx


class MaxPoolCache(NamedTuple):
    x_shape: tuple  # (N, C, H, W)
    argmax: object  # (N, C, OH, OW) uint8: offset i*kernel + j of each window's maximum
    kernel: int
    stride: int


def maxpool2d_forward(x, kernel=2, stride=None):
    """out[n, c, y, x] = max_{i,j < kernel} x[n, c, s*y + i, s*x + j]; stride defaults to kernel.

    Ties go to the first offset in (i, j) order, like PyTorch. Returns out (N, C, OH, OW), cache.
    """
    xp = get_xp(x)
    _check_4d(x, "maxpool2d")
    k, s = kernel, kernel if stride is None else stride
    N, C, H, W = x.shape
    if k > H or k > W or s < 1 or k * k > 256:
        raise ValueError(f"maxpool2d kernel {k} (stride {s}) does not fit x {tuple(x.shape)}: "
                         "use 1 <= kernel <= min(H, W), kernel <= 16 and stride >= 1")
    OH, OW = (H - k) // s + 1, (W - k) // s + 1
    out = x[:, :, 0:s * OH:s, 0:s * OW:s].copy()            # (N, C, OH, OW), offset (0, 0)
    argmax = xp.zeros((N, C, OH, OW), dtype=xp.uint8)       # (N, C, OH, OW)
    for o in range(1, k * k):
        i, j = divmod(o, k)
        v = x[:, :, i:i + s * OH:s, j:j + s * OW:s]         # (N, C, OH, OW)
        bigger = v > out                                    # strict: a tie keeps the earlier offset
        # argmax = o where bigger (argmax < o so far); 15x faster than where/copyto in NumPy
        argmax += bigger * (o - argmax)
        xp.maximum(out, v, out=out)
    return out, MaxPoolCache(tuple(x.shape), argmax, k, s)


def maxpool2d_backward(dout, cache):
    """dL/dx at each window's argmax position += dout; zero elsewhere."""
    xp = get_xp(dout)
    N, C, H, W = cache.x_shape
    k, s = cache.kernel, cache.stride
    OH, OW = cache.argmax.shape[2:]
    check_dout(dout, (N, C, OH, OW))
    dx = xp.zeros(cache.x_shape, dtype=dout.dtype)          # (N, C, H, W)
    for o in range(k * k):
        i, j = divmod(o, k)
        # += rather than =: overlapping windows (stride < kernel) can share a maximum
        dx[:, :, i:i + s * OH:s, j:j + s * OW:s] += dout * (cache.argmax == o)
    return dx


class GlobalAvgPoolCache(NamedTuple):
    x_shape: tuple  # (N, C, H, W)


def global_avgpool_forward(x):
    """out[n, c] = mean_{y, x} x[n, c, y, x]. Returns out (N, C), cache."""
    xp = get_xp(x)
    _check_4d(x, "global_avgpool")
    N, C, H, W = x.shape
    out = xp.mean(x.reshape(N, C, H * W), axis=2)           # (N, C)
    return out, GlobalAvgPoolCache(tuple(x.shape))


def global_avgpool_backward(dout, cache):
    """dL/dx[n, c, y, x] = dout[n, c] / (H * W)."""
    xp = get_xp(dout)
    N, C, H, W = cache.x_shape
    check_dout(dout, (N, C))
    dx = xp.empty(cache.x_shape, dtype=dout.dtype)          # (N, C, H, W)
    xp.multiply(dout[:, :, None, None], 1.0 / (H * W), out=dx)
    return dx
