"""The CPU fast path of dsatgo_np.core.conv: convolution by im2col and one GEMM per chunk of samples.

Same contract as conv.conv2d_forward / conv.conv2d_backward (the sums stated in dsatgo_np/core/conv.py),
the same numbers to float round-off (tests/test_kernels.py). A column matrix
``cols = (C*KH*KW, m*OH*OW)`` turns the sums into one GEMM per chunk of m samples:
``out = W_mat @ cols``, ``dW_mat += dout_chunk @ cols^T`` with dout_chunk (F, m*OH*OW) (asked
of the BLAS transposed, as ``cols @ dout_chunk^T``, the faster way round), and for dx col2im:
``dcols = W_mat^T @ dout_chunk`` added back with one add per kernel offset, or, at stride 1 when
F <= C, the forward conv itself run on dout with the flipped kernel. At stride 1 (all but the
downsampling convs of the reference networks) the columns run over whole padded rows, which
turns the copies into long contiguous ones (the "wide rows" section below). The chunks are
shared between CPU threads (parallel.py). NumPy arrays only.
"""
from __future__ import annotations

import numpy as np

from . import parallel
from ..core.conv import ConvCache, check_dout, conv_output_size

# Columns are built a few samples at a time into one reused buffer of about this size, so that
# the copy that writes them and the GEMM that reads them meet in the cache instead of RAM
# (a full [C*KH*KW, N*OH*OW] matrix is 9x the input: 300 MB for a 64-channel 32x32 batch of
# 128, whose write alone costs more than a third of the GEMM), while the GEMM of a chunk is
# still large enough to run near the BLAS's peak. Measured with bench/bench_conv.py.
CHUNK_BYTES = 1 << 22


# ----------------------------------------------------------------------------------------------
# Fast path, any stride: im2col, a chunk of samples at a time, one GEMM per chunk.

def _chunk_size(n, bytes_per_sample):
    """How many samples of columns to build at once (see CHUNK_BYTES)."""
    return max(1, min(n, CHUNK_BYTES // bytes_per_sample))


def _im2col_chunks(x, KH, KW, stride, padding, chunk):
    """Yield ``(n0, n1, cols)`` for consecutive sample ranges of ``x`` (N, C, H, W).

    ``cols`` (C*KH*KW, (n1-n0)*OH*OW) holds ``xpad[n, c, s*y + i, s*x + j]`` at row
    ``(c, i, j)``, column ``(n - n0, y, x)``: the chunk's samples side by side, so that one
    GEMM serves them all. It is a view into a buffer that the next step overwrites: use it
    before asking for the next chunk.
    """
    N, C, H, W = x.shape
    p, s = padding, stride
    OH, OW = (H + 2 * p - KH) // s + 1, (W + 2 * p - KW) // s + 1
    chunk = max(1, min(chunk, N))
    # Zeroed once: each chunk overwrites the interior only, so the border stays zero.
    xpad = np.zeros((chunk, C, H + 2 * p, W + 2 * p), dtype=x.dtype)  # (g, C, H+2p, W+2p)
    buf = np.empty(C * KH * KW * chunk * OH * OW, dtype=x.dtype)      # flat: a short last
    for n0 in range(0, N, chunk):                                     # chunk stays contiguous
        n1 = min(N, n0 + chunk)
        m = n1 - n0
        if p:
            xpad[:m, :, p:p + H, p:p + W] = x[n0:n1]
            src = xpad[:m]
        else:
            src = x[n0:n1]
        win = np.lib.stride_tricks.sliding_window_view(src, (KH, KW), axis=(2, 3))
        win = win[:, :, ::s, ::s]               # (m, C, OH, OW, KH, KW), a strided view
        win = win.transpose(1, 4, 5, 0, 2, 3)   # (C, KH, KW, m, OH, OW)
        cols = buf[:C * KH * KW * m * OH * OW].reshape(C, KH, KW, m, OH, OW)
        np.copyto(cols, win)                    # the one copy; rows of OW stay contiguous
        yield n0, n1, cols.reshape(C * KH * KW, m * OH * OW)          # (C*KH*KW, m*OH*OW)


def _chunk_of_samples(a, n0, n1, buf):
    """a[n0:n1] (m, F, L) rearranged into buf as (F, m*L): the column layout of _im2col_chunks."""
    m, F, L = n1 - n0, a.shape[1], a.shape[2]
    b = buf[:F * m * L].reshape(F, m, L)
    np.copyto(b, a[n0:n1].transpose(1, 0, 2))
    return b.reshape(F, m * L)                                        # (F, m*L)


def _store(dst, o, bias):
    """dst = o, plus the bias per channel (axis 1) when there is one."""
    if bias is None:
        np.copyto(dst, o)
    else:
        np.add(o, bias.reshape((-1,) + (1,) * (o.ndim - 2)), out=dst)


def conv2d_forward(x, weight, bias=None, stride=1, padding=0):
    """conv.conv2d_forward by im2col + GEMM.

    x: (N, C, H, W), weight: (F, C, KH, KW), bias: (F,) or None
    Returns out (N, F, OH, OW) and a ConvCache.
    """
    OH, OW = conv_output_size(x, weight, bias, stride, padding)
    N = x.shape[0]
    F, C, KH, KW = weight.shape
    L = OH * OW
    w_mat = weight.reshape(F, C * KH * KW)                  # (F, C*KH*KW)
    out = np.empty((N, F, L), dtype=x.dtype)                # (N, F, OH*OW)
    if stride == 1:
        _conv_forward_s1(x, weight, bias, padding, out.reshape(N, F, OH, OW))
        return out.reshape(N, F, OH, OW), ConvCache(x, weight, bias is not None, stride, padding)
    chunk = _chunk_size(N, C * KH * KW * L * x.itemsize)

    def work(lo, hi):                                       # samples lo:hi, on one thread
        res = np.empty(F * min(chunk, hi - lo) * L, dtype=x.dtype)
        for n0, n1, cols in _im2col_chunks(x[lo:hi], KH, KW, stride, padding, chunk):
            m = n1 - n0
            o = np.matmul(w_mat, cols, out=res[:F * m * L].reshape(F, m * L))  # (F, m*OH*OW)
            o = o.reshape(F, m, L).transpose(1, 0, 2)       # (m, F, OH*OW), a view
            _store(out[lo + n0:lo + n1], o, bias)           # while the chunk is still in cache

    parallel.ranges(work, N, blas=False)
    out = out.reshape(N, F, OH, OW)                         # (N, F, OH, OW)
    return out, ConvCache(x, weight, bias is not None, stride, padding)


def _conv_dx_col2im(dout, weight, x_shape, stride, padding):
    """dL/dx for any stride: dcols = W_mat^T @ dout, added back where the forward read it."""
    N, C, H, W = x_shape
    F, _, KH, KW = weight.shape
    _, _, OH, OW = dout.shape
    s, p = stride, padding
    L = OH * OW
    w_mat = weight.reshape(F, C * KH * KW)                  # (F, C*KH*KW)
    dout_mat = dout.reshape(N, F, L)                        # (N, F, OH*OW)
    chunk = _chunk_size(N, C * KH * KW * L * dout.itemsize)
    dx = np.empty(x_shape, dtype=dout.dtype)                # (N, C, H, W)

    def work(lo, hi):                                       # samples lo:hi, on one thread
        g = min(chunk, hi - lo)
        dxpad = np.empty(C * g * (H + 2 * p) * (W + 2 * p), dtype=dout.dtype)
        dcols = np.empty(C * KH * KW * g * L, dtype=dout.dtype)
        dbuf = np.empty(F * g * L, dtype=dout.dtype)
        for n0 in range(lo, hi, g):
            n1 = min(hi, n0 + g)
            m = n1 - n0
            d = _chunk_of_samples(dout_mat, n0, n1, dbuf)  # (F, m*OH*OW)
            # dL/dcols = W_mat^T @ dout, one GEMM for the chunk
            dc = np.matmul(w_mat.T, d, out=dcols[:C * KH * KW * m * L].reshape(C * KH * KW, m * L))
            dc = dc.reshape(C, KH, KW, m, OH, OW)           # (C, KH, KW, m, OH, OW)
            # each xpad pixel collects dcols from every window that read it: one add per
            # offset, in dcols' (C, m) order so that both sides of the add run alike
            dxp = dxpad[:C * m * (H + 2 * p) * (W + 2 * p)].reshape(C, m, H + 2 * p, W + 2 * p)
            dxp.fill(0)
            for i in range(KH):
                for j in range(KW):
                    dxp[:, :, i:i + s * OH:s, j:j + s * OW:s] += dc[:, i, j]
            np.copyto(dx[n0:n1], dxp[:, :, p:p + H, p:p + W].transpose(1, 0, 2, 3))  # crop

    parallel.ranges(work, N, blas=False)
    return dx


def _conv_dw(dout, x, weight, s, p):
    """dW_mat (F, C*KH*KW) for any stride: one GEMM per chunk of im2col columns."""
    N, C, H, W = x.shape
    F, _, KH, KW = weight.shape
    _, _, OH, OW = dout.shape
    dout_mat = dout.reshape(N, F, OH * OW)                  # (N, F, OH*OW)
    chunk = _chunk_size(N, C * KH * KW * OH * OW * x.itemsize)

    def work(lo, hi):                                       # samples lo:hi, on one thread
        dw_t = np.zeros((C * KH * KW, F), dtype=dout.dtype)  # (C*KH*KW, F): dW_mat^T
        dbuf = np.empty(F * min(chunk, hi - lo) * OH * OW, dtype=dout.dtype)
        for n0, n1, cols in _im2col_chunks(x[lo:hi], KH, KW, s, p, chunk):
            # dL/dW_mat^T = sum_n cols[n] @ dout[n]^T: one GEMM for the chunk, (C*KH*KW,
            # m*OH*OW) @ (m*OH*OW, F), the sum over its samples and pixels done by the GEMM
            d = _chunk_of_samples(dout_mat, lo + n0, lo + n1, dbuf)   # (F, m*OH*OW)
            dw_t += cols @ d.T
        return dw_t

    return _sum_transposed(parallel.ranges(work, N, blas=False))


def _sum_transposed(parts):
    """dW_mat (F, C*KH*KW) from the threads' shares of dW_mat^T.

    The weight gradient is computed transposed, as cols @ dout^T, because OpenBLAS runs that
    GEMM 20-35 % faster than dout @ cols^T, whose output has only F rows
    (`PYTHONPATH=. python bench/gemm_layouts.py`)."""
    return np.ascontiguousarray(sum(parts).T)


def conv2d_backward(dout, cache, need_dx=True):
    """Gradients of conv2d_forward.

    dout: (N, F, OH, OW). Returns ``(dx, {"weight": dW, "bias": db})``, dx (N, C, H, W), or
    dx = None when ``need_dx`` is False (the first layer: skips a GEMM as large as the forward).
    The columns are rebuilt from the cached input chunk by chunk rather than kept from the
    forward: a layout change, not a recomputation, and it keeps 9x the input out of memory.
    """
    x, weight, has_bias, s, p = cache
    N, C, H, W = x.shape
    F, _, KH, KW = weight.shape
    OH, OW = (H + 2 * p - KH) // s + 1, (W + 2 * p - KW) // s + 1
    check_dout(dout, (N, F, OH, OW), x.dtype)
    dw_mat = _conv_dw_s1(dout, x, weight, p) if s == 1 else _conv_dw(dout, x, weight, s, p)
    grads = {"weight": dw_mat.reshape(F, C, KH, KW)}        # (F, C, KH, KW)
    if has_bias:
        grads["bias"] = dout.sum(axis=(0, 2, 3))            # (F,)
    if not need_dx:
        return None, grads
    if s == 1 and KH == KW and p < KH and F <= C:
        # Stride 1, F <= C: dL/dx is the "full" correlation of dout with the kernel flipped in
        # (i, j) and transposed in (F, C), i.e. this module's forward conv with padding
        # KH-1-p: one GEMM with C rows and depth F*KH*KW, nothing to add back.
        w_flip = np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
        return conv2d_forward(dout, w_flip, padding=KH - 1 - p)[0], grads  # (N, C, H, W)
    if s == 1:
        # Stride 1, F > C (a conv that widens): the flipped conv's GEMM would have only C
        # rows, which OpenBLAS runs slowly; col2im over wide rows has C*KH*KW rows and adds
        # them back along whole rows. `bench/bench_conv.py --dx-methods` compares the two.
        return _conv_dx_s1(dout, weight, x.shape, p), grads
    return _conv_dx_col2im(dout, weight, x.shape, s, p), grads


# ----------------------------------------------------------------------------------------------
# Stride 1: columns over whole padded rows ("wide rows").
#
# At stride 1, output pixel (y, x) reads the padded plane at (y + i, x + j) for kernel offset
# (i, j): flat position (y + i) * Wp + x + j, with Wp = W + 2p. Let x run over all Wp columns
# of a padded row instead of the OW valid ones, and number the output pixels q = y * Wp + x:
# then pixel q reads flat position q + i * Wp + j, so the column row of (c, i, j) is one
# contiguous slice, OH * Wp long, of the flattened plane. im2col becomes a single copy with
# long inner loops, where the general path above copies row by row of OW values (for a 14x14
# map its per-row overhead cost as much as the GEMM). The KW - 1 extra columns per row
# ("wide" pixels x >= OW) read across the row's edge; they cost Wp / OW more GEMM work (14 %
# for 14x14, 6 % for 32x32) and are cropped in the forward; for dW, dout is set to zero
# there, so they add nothing. (dx at stride 1 is a forward conv: see conv2d_backward.)

def _wide(flat, shape, strides):
    """A strided view of a flat buffer: shape and strides in elements (see the section above)."""
    it = flat.itemsize
    return np.lib.stride_tricks.as_strided(flat, shape, tuple(st * it for st in strides))


def _wide_im2col(planes, cols, m, C, KH, KW, Hp, Wp, OH):
    """cols[(c, i, j), (n, q)] = plane(n, c)[i*Wp + j + q] from flat planes laid out (n, c)."""
    P, Q = Hp * Wp, OH * Wp
    c = cols[:C * KH * KW * m * Q].reshape(C, KH, KW, m, Q)
    np.copyto(c, _wide(planes, (C, KH, KW, m, Q), (P, Wp, 1, C * P, 1)))
    return c.reshape(C * KH * KW, m * Q)                   # (C*KH*KW, m*OH*Wp)


def _wide_geometry(x_shape, w_shape, p):
    """(N, C, H, W, F, KH, KW, Hp, Wp, OH, OW) of a stride-1 conv with padding p."""
    N, C, H, W = x_shape
    F, _, KH, KW = w_shape
    Hp, Wp = H + 2 * p, W + 2 * p                           # the padded plane
    return N, C, H, W, F, KH, KW, Hp, Wp, Hp - KH + 1, Wp - KW + 1


def _wide_dout(dout, n0, n1, buf, g, rows, Wp):
    """dout[n0:n1] (m, F, OH, OW) laid out wide in buf, as (F, m*rows*Wp): each sample's
    outputs at the top left of a rows x Wp block, zero elsewhere. buf is zeroed once by the
    caller and holds chunks of g samples; the zeros outside the outputs stay, except when a
    shorter last chunk changes the layout."""
    F, OH, OW = dout.shape[1:]
    m = n1 - n0
    d = buf[:F * m * rows * Wp].reshape(F, m, rows, Wp)
    if m < g:
        d.fill(0)
    np.copyto(d[:, :, :OH, :OW], dout[n0:n1].transpose(1, 0, 2, 3))
    return d.reshape(F, m * rows * Wp)


def _conv_forward_s1(x, weight, bias, p, out):
    """conv2d_forward at stride 1 into out (N, F, OH, OW), one wide GEMM per chunk."""
    N, C, H, W, F, KH, KW, Hp, Wp, OH, OW = _wide_geometry(x.shape, weight.shape, p)
    Q = OH * Wp                                             # wide pixels per sample
    w_mat = weight.reshape(F, C * KH * KW)                  # (F, C*KH*KW)
    chunk = _chunk_size(N, C * KH * KW * Q * x.itemsize)

    def work(lo, hi):                                       # samples lo:hi, on one thread
        g = min(chunk, hi - lo)
        planes = np.zeros(g * C * Hp * Wp + KW - 1, dtype=x.dtype)   # zero borders, kept
        cols = np.empty(C * KH * KW * g * Q, dtype=x.dtype)
        res = np.empty(F * g * Q, dtype=x.dtype)
        for n0 in range(lo, hi, g):
            n1 = min(hi, n0 + g)
            m = n1 - n0
            planes[:m * C * Hp * Wp].reshape(m, C, Hp, Wp)[:, :, p:p + H, p:p + W] = x[n0:n1]
            c = _wide_im2col(planes, cols, m, C, KH, KW, Hp, Wp, OH)  # (C*KH*KW, m*OH*Wp)
            o = np.matmul(w_mat, c, out=res[:F * m * Q].reshape(F, m * Q))
            o = o.reshape(F, m, OH, Wp)[:, :, :, :OW].transpose(1, 0, 2, 3)  # (m, F, OH, OW)
            _store(out[n0:n1], o, bias)

    parallel.ranges(work, N, blas=False)


def _conv_dw_s1(dout, x, weight, p):
    """dW_mat (F, C*KH*KW) at stride 1: one GEMM per chunk of wide columns."""
    N, C, H, W, F, KH, KW, Hp, Wp, OH, OW = _wide_geometry(x.shape, weight.shape, p)
    P, Q = Hp * Wp, OH * Wp                                 # plane size, wide pixels per sample
    chunk = _chunk_size(N, C * KH * KW * Q * x.itemsize)

    def work(lo, hi):                                       # samples lo:hi, on one thread
        g = min(chunk, hi - lo)
        planes = np.zeros(g * C * P + KW - 1, dtype=x.dtype)   # zero borders, kept
        cols = np.empty(C * KH * KW * g * Q, dtype=x.dtype)
        dwide = np.zeros(F * g * Q, dtype=dout.dtype)       # wide dout; extra columns stay 0
        dw_t = np.zeros((C * KH * KW, F), dtype=dout.dtype)  # (C*KH*KW, F): dW_mat^T
        for n0 in range(lo, hi, g):
            n1 = min(hi, n0 + g)
            m = n1 - n0
            d = _wide_dout(dout, n0, n1, dwide, g, OH, Wp)  # (F, m*OH*Wp)
            planes[:m * C * P].reshape(m, C, Hp, Wp)[:, :, p:p + H, p:p + W] = x[n0:n1]
            c = _wide_im2col(planes, cols, m, C, KH, KW, Hp, Wp, OH)  # (C*KH*KW, m*OH*Wp)
            dw_t += c @ d.T                                 # dL/dW_mat^T = sum over pixels
        return dw_t

    return _sum_transposed(parallel.ranges(work, N, blas=False))


def _conv_dx_s1(dout, weight, x_shape, p):
    """dL/dx at stride 1: col2im over wide rows, one GEMM per chunk.

    With dout laid out wide, one padded plane of P = Hp * Wp pixels per sample and zero outside
    the OH x OW outputs, dcols = W_mat^T @ dout_wide holds, at row (c, i, j) and pixel q, what
    output pixel q sends to plane position q + i*Wp + j (the forward's read, run backwards).
    So each row of dcols is added back as one contiguous slice of the flattened planes, shifted
    by i*Wp + j: KH*KW adds over whole rows instead of the general path's per-row adds. A
    zero output pixel sends nothing, so nothing crosses into the next sample's plane. The GEMM
    has C*KH*KW rows, the shape OpenBLAS runs fastest (bench/gemm_layouts.py).
    """
    N, C, H, W, F, KH, KW, Hp, Wp, OH, OW = _wide_geometry(x_shape, weight.shape, p)
    P = Hp * Wp                                             # plane size
    slack = (KH - 1) * Wp + KW - 1                          # the last sample's shifted reach
    w_t = np.ascontiguousarray(weight.reshape(F, C * KH * KW).T)   # (C*KH*KW, F)
    chunk = _chunk_size(N, C * KH * KW * P * dout.itemsize)
    dx = np.empty(x_shape, dtype=dout.dtype)                # (N, C, H, W)

    def work(lo, hi):                                       # samples lo:hi, on one thread
        g = min(chunk, hi - lo)
        dwide = np.zeros(F * g * P, dtype=dout.dtype)       # zero outside the outputs, kept
        dcols = np.empty(C * KH * KW * g * P, dtype=dout.dtype)
        planes = np.empty(C * (g * P + slack), dtype=dout.dtype)   # dL/dxpad, flat
        for n0 in range(lo, hi, g):
            n1 = min(hi, n0 + g)
            m = n1 - n0
            d = _wide_dout(dout, n0, n1, dwide, g, Hp, Wp)  # (F, m*Hp*Wp)
            dc = np.matmul(w_t, d,
                           out=dcols[:C * KH * KW * m * P].reshape(C * KH * KW, m * P))
            dc = dc.reshape(C, KH * KW, m * P)              # (C, KH*KW, m*P)
            pl = planes[:C * (m * P + slack)].reshape(C, m * P + slack)
            np.copyto(pl[:, :m * P], dc[:, 0])              # offset (0, 0) first: no zeroing
            pl[:, m * P:] = 0
            for offset in range(1, KH * KW):
                i, j = divmod(offset, KW)
                pl[:, i * Wp + j:i * Wp + j + m * P] += dc[:, offset]
            crop = pl[:, :m * P].reshape(C, m, Hp, Wp)[:, :, p:p + H, p:p + W]
            np.copyto(dx[n0:n1], crop.transpose(1, 0, 2, 3))

    parallel.ranges(work, N, blas=False)
    return dx
