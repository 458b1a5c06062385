"""Pooling as forward/backward pairs: average, max and global average pooling.

Like conv.py, every function works on merged time-batch arrays ``[N, C, H, W]`` with
``N = T * B``. Average pooling, the reference networks' pooling, also has a CPU fast path in
dsatgo_np/fast/pooling.py.
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp
from .conv import check_dout


def _check_4d(x, name):
    if x.ndim != 4:
        raise ValueError(f"{name} expects x of shape [N, C, H, W], got shape {tuple(x.shape)}: "
                         "merge time and batch first with x.reshape(T * B, C, H, W)")


class AvgPoolCache(NamedTuple):
    x_shape: tuple  # (N, C, H, W)
    kernel: int


def check_avgpool(x, kernel):
    _check_4d(x, "avgpool2d")
    H, W = x.shape[2:]
    if int(kernel) != kernel or kernel < 1:
        raise ValueError(f"avgpool2d needs a whole kernel >= 1, got {kernel!r}")
    if H % kernel or W % kernel:
        raise ValueError(f"avgpool2d with kernel {kernel} needs H and W divisible by {kernel}, "
                         f"got x {tuple(x.shape)}: pad or crop the input, or pick a kernel that "
                         "divides them (e.g. padding=1 on the previous 3x3 conv keeps H and W)")


def avgpool2d_forward(x, kernel=2):
    """out[n, c, y, x] = mean of the kernel x kernel block at (k*y, k*x); stride = kernel.

    x: (N, C, H, W) with H and W divisible by kernel. Returns out (N, C, H/k, W/k), cache.
    """
    check_avgpool(x, kernel)
    N, C, H, W = x.shape
    k = kernel
    blocks = x.reshape(N, C, H // k, k, W // k, k)          # (N, C, OH, k, OW, k), a view
    return blocks.mean(axis=(3, 5)), AvgPoolCache(tuple(x.shape), k)


def avgpool2d_backward(dout, cache):
    """dL/dx[n, c, k*y + i, k*x + j] = dout[n, c, y, x] / k^2 for every i, j < k."""
    xp = get_xp(dout)
    N, C, H, W = cache.x_shape
    k = cache.kernel
    check_dout(dout, (N, C, H // k, W // k))
    share = dout[:, :, :, None, :, None] * (1.0 / (k * k))   # (N, C, OH, 1, OW, 1)
    dx = xp.broadcast_to(share, (N, C, H // k, k, W // k, k))
    return dx.reshape(cache.x_shape)                        # (N, C, H, W), a copy


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
        argmax = xp.where(bigger, o, argmax).astype(xp.uint8)
        out = xp.maximum(out, v)
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
    share = dout[:, :, None, None] * (1.0 / (H * W))        # (N, C, 1, 1)
    return xp.broadcast_to(share, cache.x_shape).copy()     # (N, C, H, W)
