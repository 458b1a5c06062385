"""Stateless time-distributed layers as forward/backward pairs: Linear, tdBN, dropout.

Every function works on arrays whose leading axis merges time and batch, [N, ...] with
N = T * B: a layer without memory treats the T steps like T more samples, so one matrix
product serves all steps at once. Convolution is in conv.py, pooling in pooling.py.

Each forward returns (out, cache); each backward takes (dout, cache) and returns dx, or
(dx, grads) with grads keyed like the layer's parameters. This is the plain core, the
equations written once with whole arrays; dsatgo_np/fast/layers.py computes the same on a
CPU with fewer passes over memory.
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp


# --- Linear ---------------------------------------------------------------------------------

class LinearCache(NamedTuple):
    x: object        # (N, I) input
    weight: object   # (O, I) PyTorch layout
    has_bias: bool


def check_linear(x, weight):
    if x.ndim != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"linear: input of shape {tuple(x.shape)} does not fit a weight of shape "
                         f"{tuple(weight.shape)}; expected [N, {weight.shape[1]}] (flatten first?)")


def linear_forward(x, weight, bias=None):
    """out = x W^T + b.  x: [N, I], weight: [O, I], bias: [O] or None -> out [N, O]."""
    check_linear(x, weight)
    out = x @ weight.T
    if bias is not None:
        out = out + bias
    return out, LinearCache(x, weight, bias is not None)


def linear_backward(dout, cache: LinearCache, need_dx: bool = True):
    """dout: [N, O] -> (dx [N, I] or None, {"weight": [O, I], "bias": [O]})."""
    grads = {"weight": dout.T @ cache.x}                  # dout[n, o] / dW[o, i] = x[n, i]
    if cache.has_bias:
        grads["bias"] = dout.sum(axis=0)                  # dout[n, o] / db[o] = 1
    dx = dout @ cache.weight if need_dx else None         # dout[n, o] / dx[n, i] = W[o, i]
    return dx, grads


# --- tdBN: BatchNorm over time, batch and space -------------------------------------------

class BatchNormCache(NamedTuple):
    xhat: object     # (N, C, ...) normalised input
    inv_std: object  # (C,) 1 / sqrt(var + eps)
    gamma: object    # (C,) scale


def _channel_axes(x):
    """The axes BatchNorm reduces (all but the channel axis 1) and the shape that broadcasts a
    (C,) array against x: ((0, 2, 3), (1, C, 1, 1)) for images."""
    return (0,) + tuple(range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)


def batchnorm_forward(x, gamma, beta, eps: float = 1e-5):
    """Training-mode BatchNorm with per-channel statistics over every axis but axis 1.

    x: [N, C, ...] with N = T * B: tdBN normalises over time, batch and space together.

        mean = E[x],  var = E[(x - mean)^2]  (biased, as PyTorch normalises)
        xhat = (x - mean) / sqrt(var + eps),  out = gamma xhat + beta

    Returns (out, cache, mean (C,), var (C,)); the caller turns var into the unbiased
    running variance.
    """
    xp = get_xp(x)
    axes, shape = _channel_axes(x)
    mean = x.mean(axis=axes)                               # (C,)
    xc = x - mean.reshape(shape)
    var = (xc * xc).mean(axis=axes)                        # (C,) biased
    inv_std = 1.0 / xp.sqrt(var + eps)
    xhat = xc * inv_std.reshape(shape)
    out = xhat * gamma.reshape(shape) + beta.reshape(shape)
    return out, BatchNormCache(xhat, inv_std, gamma), mean, var


def batchnorm_backward(dout, cache: BatchNormCache):
    """dout: [N, C, ...] -> (dx, {"weight": dgamma (C,), "bias": dbeta (C,)}).

    With M values per channel (DERIVATIONS.md section 4):
        dx = gamma * inv_std * (dout - mean(dout) - xhat * mean(dout * xhat))
    """
    c = cache
    axes, shape = _channel_axes(dout)
    dbeta = dout.sum(axis=axes)                            # (C,) dout/dbeta = 1
    dgamma = (dout * c.xhat).sum(axis=axes)                # (C,) dout/dgamma = xhat
    m = dout.size // dout.shape[1]
    dx = dout - (dbeta / m).reshape(shape) - c.xhat * (dgamma / m).reshape(shape)
    dx = dx * (c.gamma * c.inv_std).reshape(shape)
    return dx, {"weight": dgamma, "bias": dbeta}


def batchnorm_backward_static(dout, cache: BatchNormCache):
    """Backward of BatchNorm over T copies of one input x[0] (a direct-encoded layer) whose
    forward ran on x[0] alone. dout: [T, B, C, ...] -> (dx [T, B, C, ...], grads).

    The statistics of T identical copies are those of x[0], so the forward's xhat of x[0]
    is the xhat of every step: the backward above on xhat repeated over T.
    """
    return backward_over_copies(batchnorm_backward, dout, cache)


def backward_over_copies(backward, dout, cache: BatchNormCache):
    """batchnorm_backward_static with `backward` for the batch's backward: this module's, or a
    faster one with the same contract (dsatgo_np/gpu/layers.py). T and B are folded into one
    batch of T * B samples, whose xhat is the forward's xhat of x[0] repeated over T."""
    xp = get_xp(dout)
    T = dout.shape[0]
    xhat = xp.broadcast_to(cache.xhat, (T,) + cache.xhat.shape)            # (T, B, C, ...)
    folded = cache._replace(xhat=xhat.reshape((-1,) + cache.xhat.shape[1:]))  # (T*B, C, ...)
    dx, grads = backward(dout.reshape((-1,) + dout.shape[2:]), folded)
    return dx.reshape(dout.shape), grads


def batchnorm_eval(x, gamma, beta, running_mean, running_var, eps: float = 1e-5):
    """Inference BatchNorm: out = gamma (x - running_mean) / sqrt(running_var + eps) + beta."""
    xp = get_xp(x)
    _, shape = _channel_axes(x)
    scale = gamma / xp.sqrt(running_var + eps)             # (C,)
    return (x - running_mean.reshape(shape)) * scale.reshape(shape) + beta.reshape(shape)


# --- Dropout (one mask for all time steps) -------------------------------------------------

def dropout_forward(x, p: float, rng):
    """Inverted dropout on [T, B, ...]: one mask per sample, shared by all T steps.

    Sharing the mask over time keeps a dropped neuron silent for the whole sequence, as
    SNN libraries do; a fresh mask per step would act like input noise instead.
    rng: a NumPy generator; the mask is drawn on the host and copied to x's array module, so
    that a run draws the same masks on any device.
    """
    keep = (rng.random(x.shape[1:]) >= p).astype(x.dtype) / (1.0 - p)   # (B, ...) on the host
    keep = get_xp(x).asarray(keep)
    return x * keep, keep


def dropout_backward(dout, keep):
    """dout: [T, B, ...] -> dx: dout * mask (the mask already holds the 1 / (1 - p))."""
    return dout * keep
