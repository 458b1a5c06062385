"""conv2d on the GPU: conv.conv2d_forward / conv2d_backward as large matrix products (im2col).

The plain core loops over the KH*KW kernel offsets, one small matrix product each. Here a chunk
of images is unrolled into a column matrix col (K, n L), K = C KH KW, L = OH OW,

    col[(c, i, j), (n, y, x)] = xpad[n, c, s y + i, s x + j]

and each sum of conv.py becomes one matrix product (cuBLAS, float32 unless TF32 is opted into,
tf32.py): out = W (F, K) @ col, dW = dout (F, n L) @ col^T, dcol = W^T @ dout, and dx gathers
dcol back (col2im, each dx value's terms added in the plain core's (i, j) order). The chunks
keep col under CHUNK_BYTES, so memory stays bounded whatever the batch.
"""
from __future__ import annotations

import os

from ..core.conv import ConvCache, check_dout, conv_output_size
from .build import cuda_module, kernel

CHUNK_BYTES = int(float(os.environ.get("DSATGO_CONV_CHUNK_MB", "512")) * 2**20)

# The geometry is compiled in (build.kernel's consts): C_IN, H_IN, W_IN, K_H, K_W, H_OUT,
# W_OUT, STRIDE, PAD; `count` is the chunk's number of images. col has count H_OUT W_OUT
# columns per row, fewer than 2^32 values in all (the chunks see to it).

# Index arithmetic in 32 bits (a chunk holds fewer than 2^31 values: _im2col checks), by
# the compiled-in constants except for one division by the chunk's column count.
_IM2COL = ("raw T x, int32 count", "T col", r"""
    const unsigned int L = H_OUT * W_OUT, cols = count * L, u = (unsigned int)i;
    const unsigned int k = u / cols, r = u - k * cols;    // row (c, ki, kj), column (n, oy, ox)
    const unsigned int n = r / L, l = r - n * L, oy = l / W_OUT, ox = l - oy * W_OUT;
    const unsigned int c = k / (K_H * K_W), kk = k - c * (K_H * K_W), ki = kk / K_W;
    const int y = (int)(oy * STRIDE + ki) - PAD, xx = (int)(ox * STRIDE + kk - ki * K_W) - PAD;
    col = (y >= 0 && y < H_IN && xx >= 0 && xx < W_IN) ?
        x[((n * C_IN + c) * H_IN + y) * W_IN + xx] : (T)0;
    """)

_COL2IM = ("raw T dcol, int32 count", "T dx", r"""
    const unsigned int L = H_OUT * W_OUT, cols = count * L, u = (unsigned int)i;
    const unsigned int plane = u / W_IN, xx = u - plane * W_IN, chan = plane / H_IN;
    const unsigned int y = plane - chan * H_IN, n = chan / C_IN, c = chan - n * C_IN;
    T acc = 0;
    for (int ki = 0; ki < K_H; ++ki) {                    // conv.conv2d_backward's (i, j) order
        const int ty = (int)y + PAD - ki;
        if (ty < 0 || ty % STRIDE != 0 || ty / STRIDE >= H_OUT) continue;
        for (int kj = 0; kj < K_W; ++kj) {
            const int tx = (int)xx + PAD - kj;
            if (tx < 0 || tx % STRIDE != 0 || tx / STRIDE >= W_OUT) continue;
            acc += dcol[(size_t)((c * K_H + ki) * K_W + kj) * cols + n * L
                        + (ty / STRIDE) * W_OUT + tx / STRIDE];
        }
    }
    dx = acc;
    """)

# out[n, f, l] = y[f, n L + l] (+ b[f]): the product's (F, n L) layout back to (n, F, L).
_UNFOLD = ("raw T y, raw T b, int32 count, bool has_bias", "T out", r"""
    const unsigned int u = (unsigned int)i, nf = u / L, l = u - nf * L, n = nf / F;
    const unsigned int f = nf - n * F;
    const T v = y[(f * count + n) * L + l];
    out = has_bias ? v + b[f] : v;
    """)

# d[f, n L + l] = dout[n, f, l]: dout's (n, F, L) layout as the products' (F, n L).
_FOLD = ("raw T dout, int32 count", "T d", r"""
    const unsigned int cols = count * L, u = (unsigned int)i, f = u / cols, nl = u - f * cols;
    const unsigned int n = nl / L;
    d = dout[(n * F + f) * L + (nl - n * L)];
    """)


def _chunks(N: int, per_image: int):
    """Image ranges [lo, hi) whose column matrices fit CHUNK_BYTES (at least one image)."""
    step = max(1, CHUNK_BYTES // max(per_image, 1))
    return [(lo, min(N, lo + step)) for lo in range(0, N, step)]


def _geometry(C, H, W, KH, KW, OH, OW, stride, pad) -> dict:
    return dict(C_IN=C, H_IN=H, W_IN=W, K_H=KH, K_W=KW, H_OUT=OH, W_OUT=OW, STRIDE=stride,
                PAD=pad)


def _im2col(xp, x, geometry: dict):
    """col (K, n L) of the images x [n, C, H, W] (contiguous)."""
    g = geometry
    col = xp.empty((g["C_IN"] * g["K_H"] * g["K_W"], x.shape[0] * g["H_OUT"] * g["W_OUT"]),
                   dtype=x.dtype)
    if col.size >= 2**31 or x.size >= 2**31:
        raise ValueError(f"conv2d: a chunk of {col.size} column values is too large for the "
                         "GPU kernels' 32-bit indices; lower DSATGO_CONV_CHUNK_MB")
    kernel(xp, "im2col", *_IM2COL, consts=geometry)(x, x.shape[0], col)
    return col


def conv2d_forward(x, weight, bias=None, stride=1, padding=0):
    """conv.conv2d_forward on the GPU. x: (N, C, H, W), weight: (F, C, KH, KW), bias: (F,) or
    None -> (out (N, F, OH, OW), ConvCache)."""
    xp = cuda_module(x)
    OH, OW = conv_output_size(x, weight, bias, stride, padding)
    N, C, H, W = x.shape
    F, _, KH, KW = weight.shape
    x = xp.ascontiguousarray(x)
    geometry = _geometry(C, H, W, KH, KW, OH, OW, stride, padding)
    w2 = weight.reshape(F, -1)                                   # (F, K)
    out = xp.empty((N, F, OH, OW), dtype=x.dtype)
    b = weight if bias is None else bias                         # a placeholder when no bias
    unfold = kernel(xp, "conv_unfold", *_UNFOLD, consts=dict(F=F, L=OH * OW))
    for lo, hi in _chunks(N, C * KH * KW * OH * OW * x.itemsize):
        y = w2 @ _im2col(xp, x[lo:hi], geometry)                 # (F, n L)
        unfold(y, b, hi - lo, bias is not None, out[lo:hi])
    return out, ConvCache(x, weight, bias is not None, stride, padding)


def conv2d_backward(dout, cache: ConvCache, need_dx: bool = True):
    """conv.conv2d_backward on the GPU. dout: (N, F, OH, OW) -> (dx or None, grads)."""
    xp = cuda_module(dout)
    x, weight, has_bias, s, p = cache
    N, C, H, W = x.shape
    F, _, KH, KW = weight.shape
    OH, OW = (H + 2 * p - KH) // s + 1, (W + 2 * p - KW) // s + 1
    check_dout(dout, (N, F, OH, OW), x.dtype)
    dout = xp.ascontiguousarray(dout)
    geometry = _geometry(C, H, W, KH, KW, OH, OW, s, p)
    w2 = weight.reshape(F, -1)                                   # (F, K)
    dw2 = None
    dx = xp.empty_like(x) if need_dx else None
    fold = kernel(xp, "conv_fold", *_FOLD, consts=dict(F=F, L=OH * OW))
    col2im = kernel(xp, "col2im", *_COL2IM, consts=geometry)
    for lo, hi in _chunks(N, C * KH * KW * OH * OW * x.itemsize):
        d = xp.empty((F, (hi - lo) * OH * OW), dtype=x.dtype)    # (F, n L)
        fold(dout[lo:hi], hi - lo, d)
        part = d @ _im2col(xp, x[lo:hi], geometry).T             # (F, K): sum over n, y, x
        dw2 = part if dw2 is None else dw2 + part
        if need_dx:
            col2im(w2.T @ d, hi - lo, dx[lo:hi])
    if dw2 is None:                                              # no images
        dw2 = xp.zeros_like(w2)
    grads = {"weight": dw2.reshape(weight.shape)}
    if has_bias:
        grads["bias"] = dout.sum(axis=(0, 2, 3))                 # (F,)
    return dx, grads
