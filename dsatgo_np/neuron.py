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

import numpy as np

from . import parallel
from .backend import get_xp
from .surrogate import dynamic_width, heaviside, mpd_agl_width, primitive, window
from .threshold import (ROW, adaptive_threshold, estimated_threshold, fast_layer_stats,
                        row_sums, stats_from_row_sums, threshold_vjp)

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

    rule.measures says whether it uses the statistics of h; a caller that has them already,
    as threshold.fast_layer_stats(h) would return them, passes them as rule(h, t, stats).

    lam:     decay (0-d array), for the estimated threshold and MPD-AGL's width
    running: (T,) running thresholds, used by AT methods in eval mode when cfg.running
    g:       mean scale of the preceding BatchNorm (MPD-AGL only)
    """
    if cfg.method == "mpd-agl" and g is None:
        raise ValueError("method 'mpd-agl' needs g, the mean scale of the preceding BatchNorm")
    use_running = cfg.adaptive and not training and cfg.running and cfg.threshold == "measured"
    if use_running and running is None:
        raise ValueError("eval mode with running thresholds needs the running array")

    measure = cfg.dynamic or (cfg.adaptive and cfg.threshold == "measured" and not use_running)

    def rule(h, t: int, stats=None) -> Step:
        xp = get_xp(h)
        nan = xp.asarray(float("nan"), dtype=h.dtype)
        if not measure:
            mu, sigma = nan, nan
        else:
            mu, sigma = fast_layer_stats(h) if stats is None else stats
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

    rule.measures = measure          # lif_forward then passes the stats of H[t] it took itself
    return rule


def replay_rule(theta, k) -> Callable:
    """A rule that returns recorded thresholds and widths: holds them fixed for gradient checks."""
    xp = get_xp(theta)
    nan = xp.asarray(float("nan"), dtype=theta.dtype)
    return lambda h, t, stats=None: Step(theta[t], k[t], nan, nan)


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


def lif_step_forward(x, v_prev, lam, rule: Callable, t: int, smooth: bool = False):
    """One step: (S[t], V[t], H[t], Step) from X[t] [B, ...] and V[t-1] [B, ...]."""
    h = lam * v_prev + x                                   # charge
    step = rule(h, t)                                      # theta[t], k[t]: constants
    s = primitive(h, step.theta, step.k) if smooth else heaviside(h - step.theta)   # fire
    v = h * (1 - s)                                        # hard reset to 0
    return s, v, h, step


def _stack_steps(steps, xp, dtype):
    """[Step] * T -> (theta, k, mu, sigma), each (T,)."""
    return tuple(xp.stack([xp.asarray(getattr(s, f), dtype=dtype) for s in steps])
                 for f in Step._fields)


def lif_forward_reference(X, lam, rule: Callable, smooth: bool = False, detach_reset: bool = False,
                          threshold_grad: bool = False, f_c: float = 1.0):
    """The plain loop over lif_step_forward; lif_forward computes the same numbers faster."""
    xp = get_xp(X)
    lam = xp.asarray(lam, dtype=X.dtype)
    H, S = xp.empty_like(X), xp.empty_like(X)
    steps = []
    v = xp.zeros_like(X[0])
    for t in range(X.shape[0]):
        S[t], v, H[t], step = lif_step_forward(X[t], v, lam, rule, t, smooth)
        steps.append(step)
    theta, k, mu, sigma = _stack_steps(steps, xp, X.dtype)      # each (T,)
    return S, LIFCache(H, S, lam, theta, k, mu, sigma, f_c, detach_reset, threshold_grad)


def lif_backward_reference(dS, cache: LIFCache, need_dlam: bool = True):
    """The plain BPTT loop over whole steps; lif_backward computes the same numbers faster."""
    xp = get_xp(dS)
    c = cache
    T = dS.shape[0]
    dX = xp.empty_like(dS)
    dlam = xp.zeros((), dtype=dS.dtype)
    V = c.V                                  # (T, B, ...) potential after reset
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
            dlam = dlam + xp.sum(dh * V[t - 1])                 # dH[t]/dlam = V[t-1]
            dv = c.lam * dh                                     # dH[t]/dV[t-1] = lam
    return dX, dlam if need_dlam else None


# --- the fast path: the same loops, a cache-sized block of neurons at a time ----------------
#
# A NumPy call on an array larger than the L2 cache streams it from memory, so a step written
# as ten whole-array operations reads and writes memory ten times. The neuron is element-wise
# given theta[t] and k[t], so the loops below run over blocks of BLOCK neurons, all operations
# of a block back to back while its few temporaries sit in the cache, writing every result
# into a preallocated array with out=. The backward even runs the whole time loop block by
# block, since BPTT couples a neuron only with itself. Blocks are independent, so the CPU's
# cores share them (parallel.ranges; the split falls on block boundaries). The arithmetic is
# the reference's, operation for operation: both give the same bits for spikes
# (tests/test_fast_paths.py). On a GPU, one block is the whole array.

BLOCK = 1 << 16          # neurons per block: 256 KiB per float32 temporary (bench/bench_lif.py)


def _blocks(xp, n: int):
    """Consecutive slices covering range(n), BLOCK long on the CPU, one slice on a GPU."""
    size = BLOCK if xp is np else max(n, 1)
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def _each_block(xp, n: int, work):
    """[work(blocks)] for runs of whole blocks covering range(n), one run per thread."""
    if n == 0:
        return [work([])]
    return parallel.ranges(lambda lo, hi: work([slice(b.start + lo, b.stop + lo)
                                                for b in _blocks(xp, hi - lo)]),
                           n, grain=BLOCK, xp=xp)


def lif_forward(X, lam, rule: Callable, smooth: bool = False, detach_reset: bool = False,
                threshold_grad: bool = False, f_c: float = 1.0):
    """Run the neuron over time. X: [T, B, ...] input currents -> (S [T, B, ...], cache).

    Same result as lif_forward_reference. The rule sees the whole H[t] (its statistics span
    the layer); then, block by block, fire and reset step t and charge step t + 1. A rule that
    measures H (rule.measures) gets its statistics from row sums taken in that same pass,
    while each block of H[t + 1] is still in cache: threshold.fast_layer_stats's numbers,
    without a read of its own (for blocks that hold whole rows of threshold.ROW values).
    """
    xp = get_xp(X)
    lam = xp.asarray(lam, dtype=X.dtype)
    T = X.shape[0]
    H, S = (xp.empty(X.shape, dtype=X.dtype) for _ in range(2))
    x, h, s = (a.reshape(T, -1) for a in (X, H, S))              # (T, M): one row per step
    fused = getattr(rule, "measures", False) and xp is np and BLOCK % ROW == 0
    if fused:                                                     # row sums of H[t], (T, rows)
        rs, rss = (np.empty((T, h.shape[1] // ROW), dtype=X.dtype) for _ in range(2))

    def charge_sums(t, b):                                        # row sums of block b of H[t]
        if fused:
            r = slice(b.start // ROW, b.start // ROW + (b.stop - b.start) // ROW)
            row_sums(h[t, b], rs[t, r], rss[t, r])

    def first_charge(blocks):                                     # H[0] = X[0]: V[-1] = 0
        for b in blocks:
            xp.copyto(h[0, b], x[0, b])
            charge_sums(0, b)

    def fire_reset_charge(t, step, blocks):
        vb_buf = xp.empty(BLOCK if xp is np else h.shape[1], dtype=X.dtype)
        for b in blocks:
            hb, sb, vb = h[t, b], s[t, b], vb_buf[:b.stop - b.start]
            if smooth:                                            # S = clip((H - theta)/k + 1/2, 0, 1)
                xp.subtract(hb, step.theta, out=sb)
                sb /= step.k
                sb += 0.5
                xp.clip(sb, 0.0, 1.0, out=sb)
            else:                                                 # S = Heaviside(H - theta)
                xp.greater_equal(hb, step.theta, out=sb)
            if t + 1 < T:                                         # V = H (1 - S), in cache only
                xp.subtract(1, sb, out=vb)
                vb *= hb
                xp.multiply(vb, lam, out=h[t + 1, b])             # H[t+1] = lam V[t] + X[t+1]
                h[t + 1, b] += x[t + 1, b]
                charge_sums(t + 1, b)

    steps = []
    _each_block(xp, h.shape[1], first_charge)
    for t in range(T):
        stats = stats_from_row_sums(h[t], rs[t], rss[t]) if fused and h.shape[1] > 1 else None
        step = rule(H[t], t, stats)
        steps.append(step)                                        # theta[t], k[t]: constants
        _each_block(xp, h.shape[1], lambda blocks: fire_reset_charge(t, step, blocks))
    theta, k, mu, sigma = _stack_steps(steps, xp, X.dtype)       # each (T,)
    return S, LIFCache(H, S, lam, theta, k, mu, sigma, f_c, detach_reset, threshold_grad)


def lif_backward(dS, cache: LIFCache, need_dlam: bool = True):
    """BPTT through lif_forward. dS: [T, B, ...] -> (dX [T, B, ...], dlam 0-d array).

    dlam is None when need_dlam is False (a fixed decay: skips recomputing V). Same result as
    lif_backward_reference, one block of neurons at a time over all T steps. With
    threshold_grad, dtheta[t] sums over every neuron of step t before step t - 1 can start,
    so that extension runs the reference loop.
    """
    c = cache
    if c.threshold_grad:
        return lif_backward_reference(dS, cache, need_dlam)
    xp = get_xp(dS)
    T = dS.shape[0]
    dX = xp.empty(dS.shape, dtype=dS.dtype)
    ds_, h_, s_, dx_ = (xp.reshape(a, (T, -1)) for a in (dS, c.H, c.S, dX))  # (T, M)
    half_k = 0.5 * c.k                                           # (T,) window half-widths
    inv_k = 1 / c.k                                              # (T,) window heights

    def bptt(blocks):
        """The whole time loop for these blocks; returns dlam's terms, (blocks, T) float64."""
        n = blocks[0].stop - blocks[0].start if blocks else 0
        dv_buf, u_buf, w_buf = (xp.empty(n, dtype=dS.dtype) for _ in range(3))
        in_buf = xp.empty(n, dtype=bool)
        dlam = xp.zeros((len(blocks), T), dtype=xp.float64)    # per block and step
        for i, b in enumerate(blocks):
            m = b.stop - b.start
            dv, w, inside = dv_buf[:m], w_buf[:m], in_buf[:m]
            for t in reversed(range(T)):
                h, s, ds, dh = h_[t, b], s_[t, b], ds_[t, b], dx_[t, b]
                last = t == T - 1                                # dL/dV[T-1] = 0
                u = ds                                           # dS~ = dS - dV H
                if not (last or c.detach_reset):
                    u = xp.subtract(ds, xp.multiply(dv, h, out=u_buf[:m]), out=u_buf[:m])
                xp.subtract(h, c.theta[t], out=w)                # g = 1[|H - theta| < k/2] / k
                xp.abs(w, out=w)
                xp.less(w, half_k[t], out=inside)
                xp.multiply(u, inv_k[t], out=dh)                 # dH = dS~ g + dV (1 - S)
                dh *= inside
                if not last:
                    xp.subtract(1, s, out=w)
                    w *= dv
                    dh += w
                if t > 0:
                    xp.multiply(dh, c.lam, out=dv)               # dL/dV[t-1] = lam dH[t]
                    if need_dlam:                                # dH[t]/dlam = V[t-1]
                        xp.subtract(1, s_[t - 1, b], out=w)          # = H[t-1] (1 - S[t-1])
                        w *= h_[t - 1, b]
                        dlam[i, t] = xp.einsum("i,i->", dh, w)
        return dlam

    dlam = xp.concatenate(_each_block(xp, dx_.shape[1], bptt))   # (blocks, T)
    return dX, xp.asarray(dlam.sum(), dtype=dS.dtype) if need_dlam else None
