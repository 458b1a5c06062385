"""LIF / PLIF neurons with DS-ATGO thresholds: forward over time and hand-written BPTT.

The plain statement of the neuron, one line per equation (docs/METHOD.md section 2), for
t = 0 .. T-1 with V[-1] = 0:

    charge:  H[t] = lam * V[t-1] + X[t]
    fire:    S[t] = Heaviside(H[t] - theta[t])
    reset:   V[t] = H[t] * (1 - S[t])

theta[t] and the surrogate width k[t] come from a Rule (sections 3-5) and are constants of the
backward (lif_backward). fast/neuron.py and gpu/neuron.py compute the same numbers faster.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple


from ..backend import get_xp
from .surrogate import dynamic_width, heaviside, mpd_agl_width, primitive, window
from .threshold import adaptive_threshold, estimated_threshold, layer_stats, threshold_vjp

METHODS = ("vanilla", "at", "tgo", "ds-atgo", "mpd-agl")
WIDTHS = ("threshold", "std")
THRESHOLDS = ("measured", "estimated")


@dataclass(frozen=True)
class SpikeConfig:
    """Every option of a spiking layer; the defaults are the paper's DS-ATGO.

    method:         vanilla | at | tgo | ds-atgo | mpd-agl (docs/METHOD.md section 5)
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
        for name in ("f_c", "k0", "v_th"):          # `not x > 0` also refuses NaN
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite positive number, got {value!r}")
        if not (isinstance(self.momentum, (int, float)) and 0 <= self.momentum <= 1):
            raise ValueError(f"momentum must lie in [0, 1], got {self.momentum!r}")
        for name, default, used_by, who in _APPLIES:
            value = getattr(self, name)
            if value != default and not used_by(self.method, self.threshold):
                where = (f" with threshold={self.threshold!r}"
                         if self.method in _ADAPTIVE and name != "threshold" else "")
                raise ValueError(f"{name}={value!r} does nothing for method {self.method!r}"
                                 f"{where}: only {who} uses it; leave it at {default!r} or "
                                 "pick such a method")

    @property
    def adaptive(self) -> bool:
        """Forward threshold from membrane statistics (AT)."""
        return self.method in _ADAPTIVE

    @property
    def dynamic(self) -> bool:
        """Surrogate width from membrane statistics (TGO)."""
        return self.method in _DYNAMIC


_ADAPTIVE, _DYNAMIC = ("at", "ds-atgo"), ("tgo", "ds-atgo")


def _measured_theta(method: str, threshold: str) -> bool:
    return method in _ADAPTIVE and threshold == "measured"


# Options that change nothing for some methods, refused there with a non-default value:
# (option, its default, whether (method, threshold) uses it, what uses it).
_APPLIES = (
    ("width", "threshold", lambda m, th: m in _DYNAMIC,
     "a method with the dynamic surrogate width (tgo, ds-atgo)"),
    ("threshold", "measured", lambda m, th: m in _ADAPTIVE,
     "a method with the adaptive threshold (at, ds-atgo)"),
    ("running", True, _measured_theta,
     "the measured threshold of an adaptive method (at, ds-atgo)"),
    ("momentum", 0.1, _measured_theta,
     "the measured threshold of an adaptive method (at, ds-atgo)"),
    ("threshold_grad", False, _measured_theta,
     "the measured threshold of an adaptive method (at, ds-atgo)"),
    ("f_c", 1.0, lambda m, th: m in _ADAPTIVE + _DYNAMIC,
     "a method that measures the membrane potential (at, tgo, ds-atgo)"),
    ("k0", 1.0, lambda m, th: m != "mpd-agl",
     "a method with a surrogate width of its own (all but mpd-agl, whose width follows g)"),
)


class Step(NamedTuple):
    """What a rule decides for one step; all 0-d arrays (NaN where not measured)."""
    theta: object   # () threshold that fires
    k: object       # () surrogate width
    mu: object      # () mean of H[t]
    sigma: object   # () std of H[t], ddof = 1


class Rule:
    """theta[t] and k[t] of one spiking layer for one forward pass: rule(h, t) -> Step.

    Where each comes from is declared once, here, and every kernel set reads the same
    declaration (docs/METHOD.md sections 3-5):

        theta_from  "fixed" (v_th), "estimated", "running" (R[t], eval mode) or "measured"
                    (f_c (mu + sigma) of this very H[t])
        width_from  "k0", "mpd-agl" or "dynamic" (k0 (1 + tanh(z - v_th)), Eq. 7)
        z_from      what a dynamic width reads: "theta", "sigma" (width="std") or "measured"
                    (f_c (mu + sigma), TGO without AT); None for the other widths
        measures    whether the rule needs mu[t], sigma[t] of H[t]
        theta_depends_on_h   theta is f_c (mu + sigma) of H[t]: the only case in which
                    threshold_grad has a term to add

    A caller that has the statistics already passes them: rule(h, t, (mu, sigma)).
    """

    def __init__(self, cfg: SpikeConfig, lam, training: bool, running=None, g=None):
        if cfg.method == "mpd-agl" and g is None:
            raise ValueError("method 'mpd-agl' needs g, the mean scale of the preceding "
                             "BatchNorm")
        use_running = cfg.adaptive and not training and cfg.running and \
            cfg.threshold == "measured"
        if use_running and running is None:
            raise ValueError("eval mode with running thresholds needs the running array")
        self.cfg, self.lam, self.running, self.g = cfg, lam, running, g
        if not cfg.adaptive:
            self.theta_from = "fixed"
        elif cfg.threshold == "estimated":
            self.theta_from = "estimated"
        else:
            self.theta_from = "running" if use_running else "measured"
        if cfg.method == "mpd-agl":
            self.width_from, self.z_from = "mpd-agl", None
        elif cfg.dynamic:
            # z is the adaptive threshold itself (Eq. 7); without AT it is still measured.
            self.width_from = "dynamic"
            self.z_from = ("sigma" if cfg.width == "std" else
                           "theta" if cfg.adaptive else "measured")
        else:
            self.width_from, self.z_from = "k0", None
        self.theta_depends_on_h = self.theta_from == "measured"
        self.measures = self.theta_depends_on_h or self.width_from == "dynamic"

    # Device scalars made once per forward at their first use, not at every step (each is a
    # host-to-device copy or a launch on a GPU).
    @functools.cached_property
    def _nan(self):
        return get_xp(self.lam).asarray(float("nan"), dtype=self.lam.dtype)

    @functools.cached_property
    def _fixed(self):
        return get_xp(self.lam).asarray(self.cfg.v_th, dtype=self.lam.dtype)

    @functools.cached_property
    def _k0(self):
        return get_xp(self.lam).asarray(self.cfg.k0, dtype=self.lam.dtype)

    @functools.cached_property
    def _estimated(self):
        return estimated_threshold(self.lam, self.cfg.f_c, self.cfg.v_th).astype(self.lam.dtype)

    def __call__(self, h, t: int, stats=None) -> Step:
        cfg = self.cfg
        mu, sigma = ((layer_stats(h) if stats is None else stats) if self.measures
                     else (self._nan, self._nan))
        theta = self.theta_at(t)
        if theta is None:
            theta = adaptive_threshold(mu, sigma, cfg.f_c)
        k = self.width_at(t)
        if k is None:
            z = {"theta": theta, "sigma": sigma}.get(self.z_from)
            k = dynamic_width(adaptive_threshold(mu, sigma, cfg.f_c) if z is None else z,
                              cfg.k0, cfg.v_th)
        return Step(theta, k, mu, sigma)

    def theta_at(self, t: int):
        """theta[t] when it is known without H[t] (0-d array); None when it is measured."""
        if self.theta_from == "fixed":
            return self._fixed
        if self.theta_from == "estimated":
            return self._estimated
        return self.running[t] if self.theta_from == "running" else None

    def width_at(self, t: int):
        """k[t] when it is known without H[t] (0-d array); None for a dynamic width."""
        if self.width_from == "k0":
            return self._k0
        if self.width_from == "mpd-agl":
            xp = get_xp(self.lam)
            return xp.asarray(mpd_agl_width(t, self.lam, self.g, self.cfg.v_th),
                              dtype=self.lam.dtype)
        return None


    def known_steps(self, T: int):
        """(theta, k) for all T steps as (T,) arrays, each None where it is measured from H."""
        xp, dtype = get_xp(self.lam), self.lam.dtype
        theta = {"fixed": lambda: xp.full(T, self.cfg.v_th, dtype=dtype),
                 "estimated": lambda: xp.broadcast_to(self._estimated, (T,)),
                 "running": lambda: self.running}.get(self.theta_from, lambda: None)()
        k = {"k0": lambda: xp.full(T, self.cfg.k0, dtype=dtype),
             "mpd-agl": lambda: xp.stack([self.width_at(t) for t in range(T)])
             }.get(self.width_from, lambda: None)()
        return theta, k


def make_rule(cfg: SpikeConfig, lam, training: bool, running=None, g=None) -> Rule:
    """The per-step threshold rule of cfg.method (a Rule).

    lam:     decay (0-d array): sets the array module and dtype of every constant
    running: (T,) running thresholds, used by AT methods in eval mode when cfg.running
    g:       mean scale of the preceding BatchNorm (MPD-AGL only)
    """
    return Rule(cfg, lam, training, running, g)


class Replay(Rule):
    """A rule that returns recorded thresholds and widths: holds them fixed for gradient
    checks. theta, k: (T,) arrays."""

    def __init__(self, theta, k):
        xp = get_xp(theta)
        self.theta, self.k = theta, k
        self.theta_from, self.width_from, self.z_from = "replayed", "replayed", None
        self.measures = self.theta_depends_on_h = False
        self._nan = xp.asarray(float("nan"), dtype=theta.dtype)

    def __call__(self, h, t: int, stats=None) -> Step:
        return Step(self.theta[t], self.k[t], self._nan, self._nan)

    def theta_at(self, t: int):
        return self.theta[t]

    def width_at(self, t: int):
        return self.k[t]

    def known_steps(self, T: int):
        return self.theta, self.k


def replay_rule(theta, k) -> Replay:
    """A rule that returns recorded thresholds and widths (Replay)."""
    return Replay(theta, k)


class LIFCache(NamedTuple):
    H: object      # (T, B, ...) potential after charging
    S: object      # (T, B, ...) spikes (smooth spikes in smooth mode)
    lam: object    # () decay
    theta: object  # (T,) thresholds used
    k: object      # (T,) surrogate widths
    mu: object     # (T,) mean of H[t] (NaN where not measured)
    sigma: object  # (T,) std of H[t], ddof = 1
    f_c: float
    detach_reset: bool
    threshold_grad: bool

    @property
    def V(self):
        """(T, B, ...) potential after reset, V = H (1 - S): not stored, since the backward
        needs it only for a trained decay and recomputes it (the same bits) block by block."""
        return self.H * (1 - self.S)


def lif_step_forward(x, v_prev, lam, rule: Rule, t: int, smooth: bool = False):
    """One step: (S[t], V[t], H[t], Step) from X[t] [B, ...] and V[t-1] [B, ...]."""
    h = lam * v_prev + x                                   # charge
    step = rule(h, t)                                      # theta[t], k[t]: constants
    s = primitive(h, step.theta, step.k) if smooth else heaviside(h - step.theta)   # fire
    v = h * (1 - s)                                        # hard reset to 0
    return s, v, h, step


def stack_steps(steps, xp, dtype):
    """[Step] * T -> (theta, k, mu, sigma), each (T,)."""
    return tuple(xp.stack([xp.asarray(getattr(s, f), dtype=dtype) for s in steps])
                 for f in Step._fields)


def lif_forward(X, lam, rule: Rule, smooth: bool = False, detach_reset: bool = False,
                threshold_grad: bool = False, f_c: float = 1.0):
    """Run the neuron over time. X: [T, B, ...] input currents -> (S [T, B, ...], LIFCache).

    lam: the decay (a number or 0-d array); rule: from make_rule (or replay_rule);
    smooth: fire with the window's primitive (gradient checks); the last three are recorded
    for lif_backward. Constant in backward: theta[t] and k[t] (unless threshold_grad).
    """
    xp = get_xp(X)
    lam = xp.asarray(lam, dtype=X.dtype)
    H, S = xp.empty_like(X), xp.empty_like(X)              # (T, B, ...) each
    steps = []
    v = xp.zeros_like(X[0])                                # V[-1] = 0
    for t in range(X.shape[0]):
        S[t], v, H[t], step = lif_step_forward(X[t], v, lam, rule, t, smooth)
        steps.append(step)
    theta, k, mu, sigma = stack_steps(steps, xp, X.dtype)  # each (T,)
    return S, LIFCache(H, S, lam, theta, k, mu, sigma, f_c, detach_reset, threshold_grad)


def lif_backward(dS, cache: LIFCache, need_dlam: bool = True):
    """BPTT through lif_forward. dS: [T, B, ...] -> (dX [T, B, ...], dlam 0-d array or None).

    With dV[T-1] = 0 and g[t] = window(H[t], theta[t], k[t]) (DERIVATIONS.md section 3):

        dS~[t]  = dS[t] - dV[t] * H[t]             (reset path; dropped when detach_reset)
        dH[t]   = dS~[t] * g[t] + dV[t] * (1 - S[t])
        dX[t]   = dH[t],  dV[t-1] = lam * dH[t],  dlam += sum(dH[t] * V[t-1])

    theta[t] and k[t] are constants, except theta through threshold_vjp() when the cache says
    threshold_grad. dlam is None when need_dlam is False (a fixed decay).
    """
    xp = get_xp(dS)
    c = cache
    T = dS.shape[0]
    dX = xp.empty_like(dS)                                  # (T, B, ...)
    dlam = xp.zeros((), dtype=dS.dtype)
    V = c.V if need_dlam else None                          # (T, B, ...) potential after reset
    dv = xp.zeros_like(dS[0])                               # dL/dV[T-1] = 0
    for t in reversed(range(T)):
        h, s = c.H[t], c.S[t]
        ds = dS[t] if c.detach_reset else dS[t] - dv * h    # dV[t]/dS[t] = -H[t]
        g = window(h, c.theta[t], c.k[t])                   # dS[t]/dH[t] (surrogate)
        dh = ds * g + dv * (1 - s)                          # dV[t]/dH[t] = 1 - S[t]
        if c.threshold_grad:
            dtheta = -xp.sum(ds * g)                        # dS[t]/dtheta[t] = -g
            dh = dh + threshold_vjp(dtheta, h, c.mu[t], c.sigma[t], c.f_c)
        dX[t] = dh                                          # dH[t]/dX[t] = 1
        if t > 0:
            if need_dlam:
                dlam = dlam + xp.sum(dh * V[t - 1])         # dH[t]/dlam = V[t-1]
            dv = c.lam * dh                                 # dH[t]/dV[t-1] = lam
    return dX, dlam if need_dlam else None
