"""tdBN, SGD, Adam and running averages on the GPU: core.layers.batchnorm_*, core.update.

BatchNorm takes its channel statistics from stats.py (one read of x, float64 sums) and
normalises in one element-wise kernel; its backward sums dout and dout * xhat per channel in
one read and forms dx in one more. The SGD update of a parameter is one kernel instead of
five array operations, Adam's one instead of 14 (16 with weight decay). Each line rounds as
the plain core's operation that it replaces.
"""
from __future__ import annotations

from ..core.layers import BatchNormCache, backward_over_copies
from .build import cuda_module, kernel
from .stats import channel_moments, channel_sums

# CHANNELS and SPACE (values per sample and channel) are compiled in (build.kernel's consts).
_NORMALISE = (
    "T x, raw T mean, raw T inv_std, raw T gamma, raw T beta", "T xhat, T out", r"""
    const long long c = (i / SPACE) % CHANNELS;
    xhat = (x - mean[c]) * inv_std[c];                  // (x - mean) / sqrt(var + eps)
    out = xhat * gamma[c] + beta[c];
    """)

_DX = (
    "T dout, T xhat, raw T dbeta, raw T dgamma, raw T gamma, raw T inv_std, int64 m",
    "T dx", r"""
    const long long c = (i / SPACE) % CHANNELS;
    // DERIVATIONS.md section 4: gamma inv_std (dout - mean(dout) - xhat mean(dout xhat))
    dx = (dout - dbeta[c] / (T)m - xhat * (dgamma[c] / (T)m)) * (gamma[c] * inv_std[c]);
    """)


def _layout(x):
    N, C = x.shape[:2]
    return C, x.size // max(N * C, 1)                    # channels, values per sample and channel


def batchnorm_forward(x, gamma, beta, eps: float = 1e-5):
    """layers.batchnorm_forward on the GPU. x: [N, C, ...] -> (out, cache, mean (C,), var (C,))."""
    xp = cuda_module(x)
    x = xp.ascontiguousarray(x)
    mean, var, inv_std = channel_moments(x, eps)
    xhat, out = xp.empty_like(x), xp.empty_like(x)
    C, space = _layout(x)
    kernel(xp, "bn_normalise", *_NORMALISE, consts=dict(CHANNELS=C, SPACE=space))(
        x, mean, inv_std, gamma, beta, xhat, out)
    return out, BatchNormCache(xhat, inv_std, gamma), mean, var


def batchnorm_backward(dout, cache: BatchNormCache):
    """layers.batchnorm_backward on the GPU. dout: [N, C, ...] -> (dx, {"weight", "bias"})."""
    xp = cuda_module(dout)
    dout = xp.ascontiguousarray(dout)
    xhat = xp.ascontiguousarray(cache.xhat)
    dbeta, dgamma = channel_sums(dout, xhat)              # sum dout, sum dout xhat: (C,) each
    C, space = _layout(dout)
    dx = xp.empty_like(dout)
    kernel(xp, "bn_dx", *_DX, consts=dict(CHANNELS=C, SPACE=space))(
        dout, xhat, dbeta, dgamma, cache.gamma, cache.inv_std, dout.size // C, dx)
    return dx, {"weight": dgamma, "bias": dbeta}


def batchnorm_backward_static(dout, cache: BatchNormCache):
    """layers.batchnorm_backward_static on the GPU: the backward above on xhat repeated over T.
    dout: [T, B, C, ...] -> (dx [T, B, C, ...], grads)."""
    return backward_over_copies(batchnorm_backward, dout, cache)


# --- running averages: threshold.update_running --------------------------------------------

_RUNNING = ("T r, T v, T keep, T momentum, T factor, bool scaled", "T out", r"""
    out = keep * r + (scaled ? momentum * v * factor : momentum * v);
    """)


def update_running(running, value, momentum: float = 0.1, factor: float | None = None):
    """threshold.update_running on the GPU: (1 - m) R + m value (times factor), one launch."""
    xp = cuda_module(running)
    out = xp.empty_like(running)
    kernel(xp, "update_running", *_RUNNING)(running, value, 1 - momentum, momentum,
                                            1.0 if factor is None else factor,
                                            factor is not None, out)
    return out


# --- SGD --------------------------------------------------------------------------------------

_SGD = ("T g, T lr, T momentum, T weight_decay, bool nesterov", "T p, T b", r"""
    // optim.SGD: g += wd p; b = momentum b + g; p -= lr (nesterov ? g + momentum b : b)
    T d = weight_decay != (T)0 ? g + weight_decay * p : g;
    b = b * momentum + d;
    d = nesterov ? d + momentum * b : b;
    p = p - lr * d;
    """)

_SGD_NO_MOMENTUM = ("T g, T lr, T weight_decay", "T p", r"""
    const T d = weight_decay != (T)0 ? g + weight_decay * p : g;
    p = p - lr * d;
    """)


def sgd_update(p, g, b, lr: float, momentum: float, weight_decay: float, nesterov: bool):
    """optim.sgd_update on the GPU, in place, one launch per parameter; b: the momentum
    buffer, or None without momentum."""
    xp = cuda_module(p)
    if b is None:
        kernel(xp, "sgd_no_momentum", *_SGD_NO_MOMENTUM)(g, lr, weight_decay, p)
    else:
        kernel(xp, "sgd", *_SGD)(g, lr, momentum, weight_decay, bool(nesterov), p, b)


# --- Adam -------------------------------------------------------------------------------------

_ADAM = ("T g, T lr, T beta1, T one_minus_beta1, T beta2, T one_minus_beta2, T correction1, "
         "T correction2, T eps, T weight_decay", "T p, T m, T v", r"""
    // optim.Adam: g += wd p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g g;
    // p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    const T d = weight_decay != (T)0 ? g + weight_decay * p : g;
    m = m * beta1 + one_minus_beta1 * d;
    v = v * beta2 + one_minus_beta2 * d * d;
    p = p - lr * (m / correction1) / (sqrt(v / correction2) + eps);
    """)


def adam_update(p, g, m, v, lr: float, beta1: float, beta2: float, eps: float,
                weight_decay: float, step: int):
    """update.adam_update on the GPU, in place, one launch per parameter. The scalars are
    formed as the plain update forms them (in Python's float64, then rounded to p's dtype)."""
    xp = cuda_module(p)
    kernel(xp, "adam", *_ADAM)(g, lr, beta1, 1 - beta1, beta2, 1 - beta2, 1 - beta1 ** step,
                               1 - beta2 ** step, eps, weight_decay, p, m, v)
