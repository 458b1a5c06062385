"""The layers of the thin stateful shell: Linear, Conv2d, BatchNorm, Spiking, pooling, Sequential.

Their base, Module and Parameter, is in module.py. Modules hold what persists (weights, BatchNorm statistics, running thresholds) and the cache
of their last forward; the arithmetic lives in the pure functions of neuron.py, layers.py,
conv.py and pooling.py, which each module calls through the kernel table of its input's array
module (kernels.py: the plain core, or its fast CPU or GPU versions). Every module maps
[T, B, ...] to [T, B, ...]; stateless layers fold time into the batch, [T, B, ...] ->
[T * B, ...], so one matrix product serves every step.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from . import kernels

from .core import layers
from .backend import get_xp
from .module import (Module, Parameter, _cache, _check_input, _check_size, _fold,  # noqa: F401
                     _kept, is_static, weights_rng)
from .core.neuron import SpikeConfig, make_rule, replay_rule


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


# --- the spiking neuron ----------------------------------------------------------------------

class Spiking(Module):
    """LIF (fixed lam) or PLIF (lam = sigmoid(w), w learnable) with DS-ATGO thresholds.

    Buffer running_threshold [T]: R[t] <- (1 - m) R[t] + m theta[t] in training, used as the
    threshold in eval mode by the adaptive methods. scale_from: the BatchNorm feeding this
    neuron, whose mean scale g sets MPD-AGL's surrogate width.
    """

    def __init__(self, T: int, config: SpikeConfig | None = None, neuron: str = "lif",
                 lam: float = 0.2, scale_from: BatchNorm | None = None, dtype="float32"):
        super().__init__()
        if neuron not in ("lif", "plif"):
            raise ValueError(f"unknown neuron {neuron!r}: choose 'lif' or 'plif'")
        _check_size("Spiking", T=T)
        # PLIF stores w = logit(lam), which needs 0 < lam < 1; a fixed LIF decay may reach 0 or 1.
        inside = (0 < lam < 1) if neuron == "plif" else (0 <= lam <= 1)
        if not (isinstance(lam, numbers.Real) and inside):
            raise ValueError(f"decay lam={lam!r} is out of range for a {neuron.upper()} neuron: "
                             + ("PLIF needs 0 < lam < 1" if neuron == "plif"
                                else "LIF needs 0 <= lam <= 1 (lam > 1 makes V grow)"))
        self.config = config or SpikeConfig()
        self.neuron, self.T, self.scale_from = neuron, T, scale_from
        if neuron == "plif":   # w = -ln((1 - lam) / lam), so sigmoid(w) = lam (-ln 4 for 0.2)
            self._params["w"] = Parameter(np.array(-np.log(1 / lam - 1), dtype=dtype))
        else:
            self.lam = lam
        self._buffers["running_threshold"] = np.full(T, self.config.v_th, dtype=dtype)
        self.record = False      # keep the eval-mode cache too (diagnostics.record)
        self.held = None         # (theta [T], k [T]) replayed instead of the rule: hold_thresholds
        self.cache = None

    def extra_repr(self):
        c = self.config
        lam = "learnable" if self.neuron == "plif" else self.lam
        return (f"{self.neuron}, T={self.T}, method={c.method!r}, width={c.width!r}, f_c={c.f_c}, "
                f"lam={lam}")

    def hold_thresholds(self, theta=None, k=None):
        """Replay these theta[t] and k[t] (T,) at every forward instead of the rule's (a cache's
        own, say), so that the network is a fixed function of its input and weights: what a
        finite-difference check of the backward needs. hold_thresholds() goes back to the rule."""
        self.held = None if theta is None else (theta, k)

    def decay(self, xp, dtype):
        if self.neuron == "plif":
            return 1 / (1 + xp.exp(-self._params["w"].data))
        return xp.asarray(self.lam, dtype=dtype)

    def forward(self, x):
        xp, cfg = get_xp(x), self.config
        if x.ndim < 3:
            raise ValueError(f"Spiking: expected [T, B, ...], got shape {tuple(x.shape)}")
        if cfg.adaptive and x.shape[0] != self.T:
            raise ValueError(f"this spiking layer keeps running thresholds for T={self.T} steps, "
                             f"but the input has T={x.shape[0]}; build the model with "
                             f"T={x.shape[0]} or encode the input with T={self.T}")
        lam = self.decay(xp, x.dtype)
        g = None
        if cfg.method == "mpd-agl":
            if self.scale_from is None:
                raise ValueError("method 'mpd-agl' needs the BatchNorm that feeds the neuron "
                                 "(Spiking(..., scale_from=bn))")
            g = self.scale_from._params["weight"].data.mean()
        if self.held is not None:
            rule = replay_rule(*self.held)
        else:
            rule = make_rule(cfg, lam, self.training, self._buffers["running_threshold"], g)
        # threshold_grad has a term only where theta = f_c (mu + sigma) of this H: a fixed,
        # estimated, running or replayed threshold does not depend on H.
        through_theta = cfg.threshold_grad and rule.theta_depends_on_h
        self.kernels = kernels.of(x)
        S, cache = self.kernels.lif_forward(x, lam, rule, cfg.smooth, cfg.detach_reset,
                                            through_theta, cfg.f_c)
        if self.training and cfg.adaptive and cfg.threshold == "measured":
            self._buffers["running_threshold"] = self.kernels.update_running(
                self._buffers["running_threshold"], cache.theta, cfg.momentum)
        self.cache = cache if (self.training or self.record) else None
        return S

    def backward(self, dout, need_dx: bool = True):
        _cache(self)                          # raises if the forward ran in eval mode
        dx, dlam = self.kernels.lif_backward(dout, self.cache, need_dlam=self.neuron == "plif")
        if self.neuron == "plif":
            lam = self.cache.lam
            self._params["w"].add_grad(dlam * lam * (1 - lam))     # dsigmoid(w)/dw = lam (1 - lam)
        return dx


# --- stateless layers --------------------------------------------------------------------------

class AvgPool2d(Module):
    def __init__(self, kernel: int = 2):
        super().__init__()
        self.kernel = kernel

    def forward(self, x):
        T, B = x.shape[:2]
        self.kernels = kernels.of(x)
        out, self.cache = self.kernels.avgpool2d_forward(_fold(x), self.kernel)
        return out.reshape((T, B) + out.shape[1:])

    def backward(self, dout, need_dx: bool = True):
        cache = _cache(self)                  # raises if no forward ran
        dx = self.kernels.avgpool2d_backward(_fold(dout), cache)
        return dx.reshape(dout.shape[:2] + dx.shape[1:])


class MaxPool2d(Module):
    def __init__(self, kernel: int = 2, stride: int | None = None):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x):
        T, B = x.shape[:2]
        self.kernels = kernels.of(x)
        out, self.cache = self.kernels.maxpool2d_forward(_fold(x), self.kernel, self.stride)
        return out.reshape((T, B) + out.shape[1:])

    def backward(self, dout, need_dx: bool = True):
        dx = self.kernels.maxpool2d_backward(_fold(dout), _cache(self))
        return dx.reshape(dout.shape[:2] + dx.shape[1:])


class GlobalAvgPool(Module):
    """[T, B, C, H, W] -> [T, B, C]: mean over space."""

    def forward(self, x):
        T, B = x.shape[:2]
        self.kernels = kernels.of(x)
        out, self.cache = self.kernels.global_avgpool_forward(_fold(x))
        return out.reshape(T, B, -1)

    def backward(self, dout, need_dx: bool = True):
        dx = self.kernels.global_avgpool_backward(_fold(dout), _cache(self))
        return dx.reshape(dout.shape[:2] + dx.shape[1:])


class Flatten(Module):
    """[T, B, ...] -> [T, B, prod(...)]."""

    def forward(self, x):
        self.shape = x.shape
        return x.reshape(x.shape[0], x.shape[1], -1)

    def backward(self, dout, need_dx: bool = True):
        if getattr(self, "shape", None) is None:
            raise RuntimeError("Flatten.backward needs a forward first: call net.forward(x), "
                               "then net.backward(dout)")
        return dout.reshape(self.shape)


class Dropout(Module):
    """Dropout with one mask per sample shared by all time steps; identity in eval mode.

    The masks come from one NumPy generator seeded with `seed`, drawn on the host and copied
    to x's device: the same masks on a CPU and a GPU, so that both run the same experiment.
    """

    def __init__(self, p: float = 0.5, seed: int = 0):
        super().__init__()
        if not (isinstance(p, numbers.Real) and 0 <= p < 1):
            raise ValueError(f"dropout probability must lie in [0, 1), got {p!r}")
        self.p, self.seed, self.keep = p, seed, None
        self.rng = np.random.default_rng(seed)

    def forward(self, x):
        self.keep = None
        if not self.training or self.p == 0:
            return x
        out, self.keep = layers.dropout_forward(x, self.p, self.rng)
        return out

    def backward(self, dout, need_dx: bool = True):
        return dout if self.keep is None else layers.dropout_backward(dout, self.keep)


# --- containers ----------------------------------------------------------------------------------

class Sequential(Module):
    """Modules applied in order; backward walks them in reverse."""

    def __init__(self, *modules: Module):
        super().__init__()
        for i, m in enumerate(modules):
            self._children[str(i)] = m

    def __iter__(self):
        return iter(self._children.values())

    def __len__(self):
        return len(self._children)

    def __getitem__(self, i):
        return list(self._children.values())[i]

    def forward(self, x):
        for m in self._children.values():
            x = m.forward(x)
        return x

    def backward(self, dout, need_dx: bool = False):
        """Backpropagate dL/dout; returns dL/dx only when need_dx. A network's input learns
        nothing, so by default its first layer skips dL/dx (a layer's own backward defaults to
        need_dx=True: inside a network, the layer before it needs it)."""
        mods = list(self._children.values())
        # a layer needs dL/dx only if something before it learns (or the caller asks)
        learns_before = [need_dx]
        for m in mods[:-1]:
            learns_before.append(learns_before[-1] or any(True for _ in m.named_parameters()))
        for m, need in zip(reversed(mods), reversed(learns_before)):
            dout = m.backward(dout, need_dx=need)
            if dout is None:
                break
        return dout


class SEWBlock(Module):
    """Spike-element-wise residual block: out = main(x) + shortcut(x) (SEW's ADD).

    main: conv-BN-spike-conv-BN-spike; shortcut: identity, or conv1x1-BN-spike when the
    shape changes. The sum of two spike trains may reach 2: SEW's ADD keeps it.
    """

    def __init__(self, main: Sequential, shortcut: Sequential | None = None):
        super().__init__()
        self._children["main"] = main
        if shortcut is not None:
            self._children["shortcut"] = shortcut

    def forward(self, x):
        out = self._children["main"].forward(x)
        short = self._children.get("shortcut")
        return out + (x if short is None else short.forward(x))

    def backward(self, dout, need_dx: bool = True):
        dx = self._children["main"].backward(dout, need_dx=True)     # d(a + b)/da = 1
        short = self._children.get("shortcut")
        return dx + (dout if short is None else short.backward(dout, need_dx=True))
