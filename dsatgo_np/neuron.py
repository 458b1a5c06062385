"""LIF / PLIF neurons with DS-ATGO thresholds: forward over time and hand-written BPTT.

Recurrence (METHOD.md section 2), for t = 0 .. T-1 with V[-1] = 0:

    charge:  H[t] = lam * V[t-1] + X[t]
    fire:    S[t] = Heaviside(H[t] - theta[t])
    reset:   V[t] = H[t] * (1 - S[t])

theta[t] and the surrogate width k[t] come from a *rule* called once per step on H[t]
(make_rule below; METHOD.md sections 3-5). They are constants in the backward pass: the
rule's outputs are recorded in the cache and never differentiated, except theta through
threshold_vjp() when threshold_grad=True.

Backward (DERIVATIONS.md section 3), with dV[T-1] = 0 and g[t] = window(H[t], theta[t], k[t]):

    dS~[t]  = dS[t] - dV[t] * H[t]             (reset path; dropped when detach_reset)
    dH[t]   = dS~[t] * g[t] + dV[t] * (1 - S[t])
    dX[t]   = dH[t]
    dV[t-1] = lam * dH[t]
    dlam   += sum(dH[t] * V[t-1])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

from .backend import get_xp
from .surrogate import dynamic_width, heaviside, mpd_agl_width, primitive, window
from .threshold import (adaptive_threshold, estimated_threshold, layer_stats,
                        threshold_vjp)

METHODS = ("vanilla", "at", "tgo", "ds-atgo", "mpd-agl")
WIDTHS = ("threshold", "std")
THRESHOLDS = ("measured", "estimated")


@dataclass(frozen=True)
class SpikeConfig:
    """Every option of a spiking layer; the defaults are the paper's DS-ATGO.

    method:         vanilla | at | tgo | ds-atgo | mpd-agl (METHOD.md section 5)
    f_c:            firing-rate control factor of the adaptive threshold
    v_th:           fixed threshold, initial running threshold, centre of Eq. 7's tanh
                    (None: 1.0, or 0.5 for mpd-agl)
    k0:             base surrogate width
    width:          "threshold" (Eq. 7: z = f_c (mu + sigma)) or "std" (released code: z = sigma)
    threshold:      "measured" statistics or the "estimated" f_c sqrt(1 + lam^2) v_th
    running:        eval mode uses running thresholds (True) or the batch's own statistics
    momentum:       of the running thresholds
    threshold_grad: let the gradient flow through theta (an extension, off in the paper)
    detach_reset:   treat S[t] in the reset V = H (1 - S) as a constant
    smooth:         fire with the window's primitive instead of the step (gradient checks)
    """
    method: str = "ds-atgo"
    f_c: float = 1.0
    v_th: float | None = None
    k0: float = 1.0
    width: str = "threshold"
    threshold: str = "measured"
    running: bool = True
    momentum: float = 0.1
    threshold_grad: bool = False
    detach_reset: bool = False
    smooth: bool = False

    def __post_init__(self):
        for name, value, allowed in (("method", self.method, METHODS),
                                     ("width", self.width, WIDTHS),
                                     ("threshold", self.threshold, THRESHOLDS)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}: choose one of {', '.join(allowed)}")
        if self.v_th is None:
            object.__setattr__(self, "v_th", 0.5 if self.method == "mpd-agl" else 1.0)
        if self.f_c <= 0 or self.k0 <= 0:
            raise ValueError(f"f_c and k0 must be positive, got f_c={self.f_c}, k0={self.k0}")
        if not 0 <= self.momentum <= 1:
            raise ValueError(f"momentum must lie in [0, 1], got {self.momentum}")

    @property
    def adaptive(self) -> bool:
        """Forward threshold from membrane statistics (AT)."""
        return self.method in ("at", "ds-atgo")

    @property
    def dynamic(self) -> bool:
        """Surrogate width from membrane statistics (TGO)."""
        return self.method in ("tgo", "ds-atgo")


class Step(NamedTuple):
    """What a rule decides for one step; all 0-d arrays (NaN where not measured)."""
    theta: object   # () threshold that fires
    k: object       # () surrogate width
    mu: object      # () mean of H[t]
    sigma: object   # () std of H[t], ddof = 1


def make_rule(cfg: SpikeConfig, lam, training: bool, running=None, g=None) -> Callable:
    """The per-step threshold rule of cfg.method: rule(h, t) -> Step(theta, k, mu, sigma).

    lam:     decay (0-d array), for the estimated threshold and MPD-AGL's width
    running: (T,) running thresholds, used by AT methods in eval mode when cfg.running
    g:       mean scale of the preceding BatchNorm (MPD-AGL only)
    """
    if cfg.method == "mpd-agl" and g is None:
        raise ValueError("method 'mpd-agl' needs g, the mean scale of the preceding BatchNorm")
    use_running = cfg.adaptive and not training and cfg.running and cfg.threshold == "measured"
    if use_running and running is None:
        raise ValueError("eval mode with running thresholds needs the running array")

    def rule(h, t: int) -> Step:
        xp = get_xp(h)
        nan = xp.asarray(float("nan"), dtype=h.dtype)
        measure = cfg.dynamic or (cfg.adaptive and cfg.threshold == "measured" and not use_running)
        mu, sigma = layer_stats(h) if measure else (nan, nan)
        fixed = xp.asarray(cfg.v_th, dtype=h.dtype)
        if not cfg.adaptive:
            theta = fixed
        elif cfg.threshold == "estimated":
            theta = estimated_threshold(lam, cfg.f_c, cfg.v_th).astype(h.dtype)
        elif use_running:
            theta = running[t]
        else:
            theta = adaptive_threshold(mu, sigma, cfg.f_c)
        if cfg.method == "mpd-agl":
            k = xp.asarray(mpd_agl_width(t, lam, g, cfg.v_th), dtype=h.dtype)
        elif cfg.dynamic:
            # z is the adaptive threshold itself (Eq. 7); without AT it is still measured.
            z = theta if cfg.adaptive else adaptive_threshold(mu, sigma, cfg.f_c)
            if cfg.width == "std":
                z = sigma
            k = dynamic_width(z, cfg.k0, cfg.v_th)
        else:
            k = xp.asarray(cfg.k0, dtype=h.dtype)
        return Step(theta, k, mu, sigma)

    return rule


def replay_rule(theta, k) -> Callable:
    """A rule that returns recorded thresholds and widths: holds them fixed for gradient checks."""
    xp = get_xp(theta)
    nan = xp.asarray(float("nan"), dtype=theta.dtype)
    return lambda h, t: Step(theta[t], k[t], nan, nan)


class LIFCache(NamedTuple):
    H: object      # (T, B, ...) potential after charging
    S: object      # (T, B, ...) spikes (smooth spikes in smooth mode)
    V: object      # (T, B, ...) potential after reset
    lam: object    # () decay
    theta: object  # (T,) thresholds used
    k: object      # (T,) surrogate widths
    mu: object     # (T,) mean of H[t] (NaN where not measured)
    sigma: object  # (T,) std of H[t], ddof = 1
    f_c: float
    detach_reset: bool
    threshold_grad: bool


def lif_step_forward(x, v_prev, lam, rule: Callable, t: int, smooth: bool = False):
    """One step: (S[t], V[t], H[t], Step) from X[t] [B, ...] and V[t-1] [B, ...]."""
    h = lam * v_prev + x                                   # charge
    step = rule(h, t)                                      # theta[t], k[t]: constants
    s = primitive(h, step.theta, step.k) if smooth else heaviside(h - step.theta)   # fire
    v = h * (1 - s)                                        # hard reset to 0
    return s, v, h, step


def lif_forward(X, lam, rule: Callable, smooth: bool = False, detach_reset: bool = False,
                threshold_grad: bool = False, f_c: float = 1.0):
    """Run the neuron over time. X: [T, B, ...] input currents -> (S [T, B, ...], cache)."""
    xp = get_xp(X)
    lam = xp.asarray(lam, dtype=X.dtype)
    H, S, V = xp.empty_like(X), xp.empty_like(X), xp.empty_like(X)
    steps = []
    v = xp.zeros_like(X[0])
    for t in range(X.shape[0]):
        S[t], v, H[t], step = lif_step_forward(X[t], v, lam, rule, t, smooth)
        V[t] = v
        steps.append(step)
    theta, k, mu, sigma = (xp.stack([xp.asarray(getattr(s, f), dtype=X.dtype) for s in steps])
                           for f in Step._fields)      # each (T,)
    return S, LIFCache(H, S, V, lam, theta, k, mu, sigma, f_c, detach_reset, threshold_grad)


def lif_backward(dS, cache: LIFCache):
    """BPTT through lif_forward. dS: [T, B, ...] -> (dX [T, B, ...], dlam 0-d array)."""
    xp = get_xp(dS)
    c = cache
    T = dS.shape[0]
    dX = xp.empty_like(dS)
    dlam = xp.zeros((), dtype=dS.dtype)
    dv = xp.zeros_like(dS[0])                # dL/dV[t], from step t+1 (zero after the last)
    for t in reversed(range(T)):
        h, s = c.H[t], c.S[t]
        ds = dS[t] if c.detach_reset else dS[t] - dv * h        # dV[t]/dS[t] = -H[t]
        g = window(h, c.theta[t], c.k[t])                       # dS[t]/dH[t] (surrogate)
        dh = ds * g + dv * (1 - s)                              # dV[t]/dH[t] = 1 - S[t]
        if c.threshold_grad:
            dtheta = -xp.sum(ds * g)                            # dS[t]/dtheta[t] = -g
            dh = dh + threshold_vjp(dtheta, h, c.mu[t], c.sigma[t], c.f_c)
        dX[t] = dh                                              # dH[t]/dX[t] = 1
        if t > 0:
            dlam = dlam + xp.sum(dh * c.V[t - 1])               # dH[t]/dlam = V[t-1]
            dv = c.lam * dh                                     # dH[t]/dV[t-1] = lam
    return dX, dlam
