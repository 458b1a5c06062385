"""The layers of the thin stateful shell; here those with weights: Linear, Conv2d, BatchNorm.

Their base, Module and Parameter, is in module.py; Spiking is in spiking.py, pooling, Flatten,
Dropout and the containers in containers.py (all importable from here too). A module holds
what persists (weights, BatchNorm statistics) and the cache of its last forward; the
arithmetic is the core's, called through the kernel table of its input's array module
(kernels.py). Every module maps [T, B, ...] to [T, B, ...]; layers without memory fold time
into the batch, [T * B, ...], so one matrix product serves every step.
"""
from __future__ import annotations

import math

import numpy as np

from . import kernels
from .backend import get_xp
from .module import (Module, Parameter, _cache, _check_input, _check_size, _fold,  # noqa: F401
                     _kept, is_static, weights_rng)


# --- layers with parameters ----------------------------------------------------------------

class Linear(Module):
    """Time-distributed linear layer, [T, B, I] -> [T, B, O]; weight [O, I] as in PyTorch.

    rng: the generator of the initial weights; None draws from the generator that all such
    layers share (dsatgo_np.manual_seed reseeds it), so two layers never start as copies.
    """

    def __init__(self, n_in: int, n_out: int, bias: bool = True, rng=None, dtype="float32"):
        super().__init__()
        _check_size("Linear", n_in=n_in, n_out=n_out)
        rng = weights_rng(rng)
        self.cache = None
        bound = 1.0 / np.sqrt(n_in)                       # PyTorch's default uniform init
        self._params["weight"] = Parameter(rng.uniform(-bound, bound, (n_out, n_in)).astype(dtype))
        if bias:
            self._params["bias"] = Parameter(rng.uniform(-bound, bound, n_out).astype(dtype))

    def forward(self, x):
        w = self._params["weight"].data
        _check_input("Linear", x, w, 3)
        b = self._params["bias"].data if "bias" in self._params else None
        self.static = is_static(x)
        T, B = x.shape[:2]
        self.kernels = kernels.of(x)
        # A direct-encoded input is the same at every step: compute once, broadcast over T.
        out, cache = self.kernels.linear_forward(x[0] if self.static else _fold(x), w, b)
        self.cache = _kept(self, cache)
        if self.static:
            return get_xp(out).broadcast_to(out, (T,) + out.shape)
        return out.reshape(T, B, -1)                     # (T, B, O)

    def backward(self, dout, need_dx: bool = True):
        T, B = dout.shape[:2]
        w, K = _cache(self).weight, self.kernels
        if self.static:                       # x[t] = x[0] for all t: dW = (sum_t dout[t])^T x[0]
            _, grads = K.linear_backward(dout.sum(axis=0), self.cache, need_dx=False)
            dx = None
            if need_dx:
                dx = K.matmul(_fold(dout), w).reshape(T, B, -1)       # (T, B, I)
        else:
            dx, grads = K.linear_backward(_fold(dout), self.cache, need_dx)
            dx = None if dx is None else dx.reshape(T, B, -1)
        for k, g in grads.items():
            self._params[k].add_grad(g)
        return dx


class Conv2d(Module):
    """Time-distributed 2-D convolution, [T, B, C, H, W] -> [T, B, F, OH, OW].

    rng: as for Linear (None: the shared generator of dsatgo_np.manual_seed).
    """

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1,
                 padding: int = 1, bias: bool = False, rng=None, dtype="float32"):
        super().__init__()
        _check_size("Conv2d", c_in=c_in, c_out=c_out, kernel=kernel, stride=stride)
        rng = weights_rng(rng)
        self.cache = None
        bound = 1.0 / np.sqrt(c_in * kernel * kernel)
        self._params["weight"] = Parameter(
            rng.uniform(-bound, bound, (c_out, c_in, kernel, kernel)).astype(dtype))
        if bias:
            self._params["bias"] = Parameter(rng.uniform(-bound, bound, c_out).astype(dtype))
        self.stride, self.padding = stride, padding

    def extra_repr(self):
        return f"{super().extra_repr()}, stride={self.stride}, padding={self.padding}"

    def forward(self, x):
        w = self._params["weight"].data
        _check_input("Conv2d", x, w, 5)
        b = self._params["bias"].data if "bias" in self._params else None
        self.static = is_static(x)
        T, B = x.shape[:2]
        self.kernels = kernels.of(x)
        out, cache = self.kernels.conv2d_forward(x[0] if self.static else _fold(x), w, b,
                                                 stride=self.stride, padding=self.padding)
        self.cache = _kept(self, cache)
        if self.static:
            return get_xp(out).broadcast_to(out, (T,) + out.shape)
        return out.reshape((T, B) + out.shape[1:])        # (T, B, F, OH, OW)

    def backward(self, dout, need_dx: bool = True):
        T, B = dout.shape[:2]
        _cache(self)                          # raises if the forward ran in eval mode
        K = self.kernels
        if self.static:                       # x[t] = x[0] for all t: dW from sum_t dout[t]
            _, grads = K.conv2d_backward(dout.sum(axis=0), self.cache, need_dx=False)
            dx = None
            if need_dx:                       # dL/dx[t] differs per step: one pass per step
                dx = get_xp(dout).stack([K.conv2d_backward(dout[t], self.cache)[0]
                                         for t in range(T)])
        else:
            dx, grads = K.conv2d_backward(_fold(dout), self.cache, need_dx=need_dx)
            dx = None if dx is None else dx.reshape((T, B) + dx.shape[1:])
        for k, g in grads.items():
            self._params[k].add_grad(g)
        return dx


class BatchNorm(Module):
    """tdBN: per-channel BatchNorm over time, batch and space; input [T, B, C, ...].

    Training normalises with the batch's biased variance; the running variance is updated
    with the unbiased one (PyTorch's conventions, momentum 0.1, eps 1e-5).
    """

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5,
                 scale: float = 1.0, dtype="float32"):
        super().__init__()
        _check_size("BatchNorm", channels=channels)
        for name, value, ok in (("momentum", momentum, 0 <= momentum <= 1), ("eps", eps, eps > 0),
                                ("scale", scale, math.isfinite(scale))):
            if not ok:
                raise ValueError(f"BatchNorm: {name}={value!r} is out of range (momentum in "
                                 "[0, 1], eps > 0, a finite scale)")
        self._params["weight"] = Parameter(np.full(channels, scale, dtype=dtype))
        self._params["bias"] = Parameter(np.zeros(channels, dtype=dtype))
        self._buffers["running_mean"] = np.zeros(channels, dtype=dtype)
        self._buffers["running_var"] = np.ones(channels, dtype=dtype)
        self.momentum, self.eps = momentum, eps
        self.cache, self.static = None, False

    def forward(self, x):
        gamma, beta = self._params["weight"].data, self._params["bias"].data
        if x.ndim < 3 or x.shape[2] != gamma.shape[0]:
            raise ValueError(f"BatchNorm over {gamma.shape[0]} channels got input of shape "
                             f"{tuple(x.shape)}; expected [T, B, {gamma.shape[0]}, ...]")
        self.kernels = K = kernels.of(x)
        if not self.training:
            self.cache = None                              # nothing to differentiate
            stats = (gamma, beta, self._buffers["running_mean"], self._buffers["running_var"], self.eps)
            if is_static(x):                               # same input at every step
                return get_xp(x).broadcast_to(K.batchnorm_eval(x[0], *stats), x.shape)
            return K.batchnorm_eval(_fold(x), *stats).reshape(x.shape)
        # A direct-encoded input is the same at every step, and so are its statistics over
        # time and batch: normalise x[0] once and broadcast, as the Linear/Conv before it does.
        self.static = is_static(x)
        x0 = x[0] if self.static else _fold(x)
        out, self.cache, mean, var = K.batchnorm_forward(x0, gamma, beta, self.eps)
        m = x.size // x.shape[2]                           # values per channel, over T too
        self.update_running_stats(mean, var, m)
        if self.static:
            return get_xp(out).broadcast_to(out, x.shape)
        return out.reshape(x.shape)

    def update_running_stats(self, mean, var, m: int):
        """PyTorch's BatchNorm update, momentum on the new value and the unbiased variance:

            running_mean <- (1 - momentum) running_mean + momentum mean
            running_var  <- (1 - momentum) running_var  + momentum var m / (m - 1)

        mean, var: the batch's (C,) statistics, var biased; m values per channel.
        """
        rm, rv, mom = self._buffers["running_mean"], self._buffers["running_var"], self.momentum
        K = kernels.of(mean)
        self._buffers["running_mean"] = K.update_running(rm, mean, mom)
        self._buffers["running_var"] = K.update_running(rv, var, mom, m / max(m - 1, 1))

    def backward(self, dout, need_dx: bool = True):
        _cache(self)                          # raises if the forward ran in eval mode
        if self.static:
            dx, grads = self.kernels.batchnorm_backward_static(dout, self.cache)
        else:
            dx, grads = self.kernels.batchnorm_backward(_fold(dout), self.cache)
            dx = dx.reshape(dout.shape)
        for k, g in grads.items():
            self._params[k].add_grad(g)
        return dx




# The shell's other layers, here too so that dn.model holds every layer.
from .spiking import Spiking  # noqa: E402,F401
from .containers import (AvgPool2d, Dropout, Flatten, GlobalAvgPool, MaxPool2d,  # noqa: E402,F401
                         SEWBlock, Sequential)
