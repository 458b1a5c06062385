"""The spiking layer of the shell: Spiking, a LIF or PLIF neuron with its method's thresholds.

It holds what persists (PLIF's decay, the running thresholds) and the cache of its last
forward; the arithmetic is core/neuron.py's, through the kernel table of its input's module.
"""
from __future__ import annotations

import numbers

import numpy as np

from . import kernels
from .backend import get_xp
from .core.neuron import SpikeConfig, make_rule, replay_rule
from .module import Module, Parameter, _cache, _check_size


# --- the spiking neuron ----------------------------------------------------------------------

class Spiking(Module):
    """LIF (fixed lam) or PLIF (lam = sigmoid(w), w learnable) with DS-ATGO thresholds.

    Buffer running_threshold [T]: R[t] <- (1 - m) R[t] + m theta[t] in training, used as the
    threshold in eval mode by the adaptive methods. scale_from: the BatchNorm feeding this
    neuron, whose mean scale g sets MPD-AGL's surrogate width.
    """

    def __init__(self, T: int, config: SpikeConfig | None = None, neuron: str = "lif",
                 lam: float = 0.2, scale_from=None, dtype="float32"):
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
