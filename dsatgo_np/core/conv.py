"""Convolution as a forward/backward pair on [N, C, H, W] (N = T * B: all steps in one call).

Cross-correlation as PyTorch's conv2d, stride s, xpad = x zero-padded by p on H and W:

    out[n, f, y, x] = b[f] + sum_{c, i, j} W[f, c, i, j] xpad[n, c, s y + i, s x + j]
    OH = (H + 2p - KH) // s + 1,  OW = (W + 2p - KW) // s + 1

conv2d_backward gives the partials. The plain core writes every sum as a loop over the KH KW
kernel offsets (i, j), one matrix product over channels each, and never builds a column
matrix; fast/conv.py (im2col, a chunk of samples at a time) and gpu/conv.py compute the same.
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp


class ConvCache(NamedTuple):
    """What conv2d backward needs; the plain and fast kernels share it."""
    x: object         # (N, C, H, W) the input, by reference (functions never mutate it)
    weight: object    # (F, C, KH, KW)
    has_bias: bool    # whether grads gets a "bias" entry
    stride: int
    padding: int


def conv_output_size(x, weight, bias, stride, padding):
    """Validate conv2d arguments; return (OH, OW)."""
    if x.ndim != 4:
        raise ValueError(f"conv2d expects x of shape [N, C, H, W], got shape {tuple(x.shape)}: "
                         "merge time and batch first with x.reshape(T * B, C, H, W)")
    if weight.ndim != 4:
        raise ValueError(f"conv2d expects weight of shape [F, C, KH, KW], got shape "
                         f"{tuple(weight.shape)}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"conv2d channel mismatch: x {tuple(x.shape)} has C={x.shape[1]} but "
                         f"weight {tuple(weight.shape)} expects C={weight.shape[1]}: build the "
                         f"weight as [F, {x.shape[1]}, KH, KW] or fix the previous layer's "
                         "channels")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"conv2d bias must have shape ({weight.shape[0]},) to match weight "
                         f"{tuple(weight.shape)}, got {tuple(bias.shape)}")
    if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        raise TypeError(f"conv2d dtypes differ: x {x.dtype}, weight {weight.dtype}"
                        + ("" if bias is None else f", bias {bias.dtype}")
                        + ": build parameters in the input's dtype (float32 to train, float64 "
                          "to check gradients), an upcast would silently slow everything down")
    if int(stride) != stride or stride < 1 or int(padding) != padding or padding < 0:
        raise ValueError(f"conv2d needs an integer stride >= 1 and padding >= 0, "
                         f"got stride={stride}, padding={padding}")
    H, W = x.shape[2] + 2 * padding, x.shape[3] + 2 * padding
    KH, KW = weight.shape[2:]
    if KH > H or KW > W:
        raise ValueError(f"conv2d kernel {KH}x{KW} is larger than the padded input {H}x{W} "
                         f"(x {tuple(x.shape)}, padding={padding}): increase padding or use a "
                         "smaller kernel")
    return (H - KH) // stride + 1, (W - KW) // stride + 1


def check_dout(dout, expected_shape, expected_dtype=None):
    """dout must have the forward output's shape (and dtype); pooling.py uses this too."""
    if tuple(dout.shape) != tuple(expected_shape):
        raise ValueError(f"dout has shape {tuple(dout.shape)}, but the forward output had shape "
                         f"{tuple(expected_shape)}")
    if expected_dtype is not None and dout.dtype != expected_dtype:
        raise TypeError(f"dout is {dout.dtype} but the forward ran in {expected_dtype}: "
                        "keep one dtype through forward and backward")


# ----------------------------------------------------------------------------------------------
# The sums above, one kernel offset (i, j) at a time.

def conv2d_forward(x, weight, bias=None, stride=1, padding=0):
    """2-D convolution (PyTorch's conv2d). x: (N, C, H, W), weight: (F, C, KH, KW), bias: (F,)
    or None -> (out (N, F, OH, OW), ConvCache)."""
    xp = get_xp(x)
    OH, OW = conv_output_size(x, weight, bias, stride, padding)
    F, C, KH, KW = weight.shape
    p, s = padding, stride
    xpad = xp.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))          # (N, C, H+2p, W+2p)
    out = xp.zeros((x.shape[0], OH, OW, F), dtype=x.dtype)       # (N, OH, OW, F)
    for i in range(KH):
        for j in range(KW):
            patch = xpad[:, :, i:i + s * OH:s, j:j + s * OW:s]   # (N, C, OH, OW)
            out += patch.transpose(0, 2, 3, 1) @ weight[:, :, i, j].T   # sum over c
    if bias is not None:
        out += bias
    out = xp.ascontiguousarray(out.transpose(0, 3, 1, 2))        # (N, F, OH, OW)
    return out, ConvCache(x, weight, bias is not None, stride, padding)


def conv2d_backward(dout, cache: ConvCache, need_dx: bool = True):
    """dout: (N, F, OH, OW) -> (dx (N, C, H, W) or None, {"weight": dW, "bias": db}).

        dL/dW[f, c, i, j]             = sum_{n, y, x} dout[n, f, y, x] xpad[n, c, s y + i, s x + j]
        dL/db[f]                      = sum_{n, y, x} dout[n, f, y, x]
        dL/dxpad[n, c, s y + i, s x + j] += sum_f W[f, c, i, j] dout[n, f, y, x]   (then crop p)

    dx is None when need_dx is False (the first layer: nothing before it learns)."""
    xp = get_xp(dout)
    x, weight, has_bias, s, p = cache
    N, C, H, W = x.shape
    F, _, KH, KW = weight.shape
    OH, OW = (H + 2 * p - KH) // s + 1, (W + 2 * p - KW) // s + 1
    check_dout(dout, (N, F, OH, OW), x.dtype)
    xpad = xp.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))          # (N, C, H+2p, W+2p)
    d = dout.transpose(0, 2, 3, 1).reshape(-1, F)                # (N*OH*OW, F)
    dxpad = xp.zeros_like(xpad) if need_dx else None            # (N, C, H+2p, W+2p)
    dweight = xp.zeros_like(weight)                              # (F, C, KH, KW)
    for i in range(KH):
        for j in range(KW):
            window = (slice(None), slice(None), slice(i, i + s * OH, s), slice(j, j + s * OW, s))
            patch = xpad[window].transpose(0, 2, 3, 1).reshape(-1, C)   # (N*OH*OW, C)
            dweight[:, :, i, j] = d.T @ patch                    # sum over n, y, x
            if need_dx:                                          # sum over f
                back = (d @ weight[:, :, i, j]).reshape(N, OH, OW, C)
                dxpad[window] += back.transpose(0, 3, 1, 2)
    grads = {"weight": dweight}
    if has_bias:
        grads["bias"] = dout.sum(axis=(0, 2, 3))                 # (F,)
    if not need_dx:
        return None, grads
    return dxpad[:, :, p:p + H, p:p + W].copy(), grads           # crop: (N, C, H, W)
