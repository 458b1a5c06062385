"""Stateless time-distributed layers as forward/backward pairs.

Every function works on arrays whose leading axis merges time and batch, [N, ...] with
N = T * B: a layer without memory treats the T steps like T more samples, so one matrix
product serves all steps at once. Convolution and pooling live in conv.py.

Each forward returns (out, cache); each backward takes (dout, cache) and returns dx, or
(dx, grads) with grads keyed like the layer's parameters.
"""
from __future__ import annotations

from typing import NamedTuple

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
    out = x @ weight.T
    if bias is not None:
        out += bias
    return out, LinearCache(x, weight, bias is not None)


def linear_backward(dout, cache: LinearCache, need_dx: bool = True):
    """dout: [N, O] -> (dx [N, I] or None, {"weight": [O, I], "bias": [O]})."""
    grads = {"weight": dout.T @ cache.x}              # dout/dW[o, i] = x[n, i]
    if cache.has_bias:
        grads["bias"] = dout.sum(axis=0)
    dx = dout @ cache.weight if need_dx else None     # dout/dx = W
    return dx, grads


# --- tdBN: BatchNorm over time, batch and space -------------------------------------------

class BatchNormCache(NamedTuple):
    xhat: object     # (N, C, ...) normalised input
    inv_std: object  # (C,) 1 / sqrt(var + eps)
    gamma: object    # (C,) scale
    axes: tuple      # reduced axes: all but the channel axis 1


def batchnorm_forward(x, gamma, beta, eps: float = 1e-5):
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


def batchnorm_backward(dout, cache: BatchNormCache):
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


def batchnorm_eval(x, gamma, beta, running_mean, running_var, eps: float = 1e-5):
    """Inference BatchNorm with the running statistics (no cache: nothing to differentiate)."""
    xp = get_xp(x)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    scale = gamma / xp.sqrt(running_var + eps)
    return x * scale.reshape(shape) + (beta - running_mean * scale).reshape(shape)


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
