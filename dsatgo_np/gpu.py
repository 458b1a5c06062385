"""The LIF neuron over time as fused CUDA kernels (CuPy): the plain core's numbers, fewer launches.

neuron.lif_forward / lif_backward run a handful of whole-array CuPy operations per step, each
a kernel launch that reads and writes [B, ...] from GPU memory. Given theta[t] and k[t], the
neuron is element-wise and BPTT couples each neuron only with itself, so one CUDA thread can
carry one neuron through all T steps in registers:

    forward, theta and k known before the pass (fixed or estimated thresholds, eval mode with
    running thresholds, a replayed rule that says it measures nothing):
        one launch per layer: for t = 0..T-1: H = lam V + X[t]; S = fire(H); V = H (1 - S)
    forward, the rule measures H[t] (AT, TGO, DS-ATGO in training): theta[t] needs the mean
        and std of all of H[t] first, so one fused launch per step (fire and reset step t - 1,
        charge step t) plus the rule's reductions for mu and sigma, all on the device
    backward: one launch per layer, t = T-1..0 in each thread (the recurrence of neuron.py),
        and dlam's terms summed per neuron in float64, then over neurons.
        threshold_grad couples all neurons of a step through dtheta[t]: the plain backward.

The kernels are compiled without fused multiply-adds (--fmad=false), so every operation rounds
as the plain core's separate CuPy operations do: H, S and dX equal the plain core bit for bit;
dlam differs only in the order of its sum (tests/test_cupy.py). Nothing here imports cupy:
the module comes from the arrays (backend.get_xp), and kernels are built on first use, so this
file imports on any machine. Same contract as neuron.lif_forward / neuron.lif_backward.
"""
from __future__ import annotations

from . import neuron
from .backend import get_xp

_OPTIONS = ("--fmad=false",)            # no a * b + c contracted to fma: the plain roundings

# fire(): S = Heaviside(H - theta) (>= 0 fires, surrogate.heaviside), or in smooth mode the
# window's primitive clip((H - theta) / k + 1/2, 0, 1) (surrogate.primitive), NaN kept.
_PREAMBLE = r"""
template <typename F>
__device__ F fire(F h, F theta, F k, bool smooth) {
    if (smooth) {
        F z = (h - theta) / k + (F)0.5;
        return z < (F)0 ? (F)0 : (z > (F)1 ? (F)1 : z);
    }
    return h - theta >= (F)0 ? (F)1 : (F)0;
}
"""

_SOURCES = {
    # All T steps of neuron i; theta, k: (T,); lam: (1,); x, h, s: (T, n) C-contiguous.
    "forward_all_steps": (
        "raw T x, raw T theta, raw T k, raw T lam, int32 steps, int64 n, bool smooth",
        "raw T h, raw T s",
        r"""
        T v = 0;                                            // V[-1] = 0
        for (int t = 0; t < steps; ++t) {
            const ptrdiff_t j = (ptrdiff_t)t * n + i;
            const T ht = lam[0] * v + x[j];                 // charge
            const T st = fire(ht, theta[t], k[t], smooth);  // fire
            h[j] = ht;
            s[j] = st;
            v = ht * ((T)1 - st);                           // hard reset
        }
        """),
    # Fire and reset step t - 1, charge step t: theta, k, lam: (1,) each (theta[t-1], k[t-1]).
    "fire_reset_charge": (
        "T h_prev, T x, raw T theta, raw T k, raw T lam, bool smooth",
        "T s_prev, T h",
        r"""
        const T sp = fire(h_prev, theta[0], k[0], smooth);
        s_prev = sp;
        h = lam[0] * (h_prev * ((T)1 - sp)) + x;
        """),
    "fire": ("T h, raw T theta, raw T k, bool smooth", "T s",
             "s = fire(h, theta[0], k[0], smooth);"),
    # BPTT of neuron i over t = T-1..0 (neuron.lif_backward line for line); dlam_part: (n,).
    "backward_all_steps": (
        "raw T dS, raw T H, raw T S, raw T theta, raw T k, raw T lam, int32 steps, int64 n, "
        "bool detach_reset, bool need_dlam",
        "raw T dX, raw float64 dlam_part",
        r"""
        T dv = 0;                                           // dL/dV[T-1] = 0
        double dl = 0;
        for (int t = steps - 1; t >= 0; --t) {
            const ptrdiff_t j = (ptrdiff_t)t * n + i;
            const T h = H[j], s = S[j];
            const T ds = detach_reset ? dS[j] : dS[j] - dv * h;          // dV[t]/dS[t] = -H[t]
            const T g = fabs(h - theta[t]) < (T)0.5 * k[t] ? (T)1 / k[t] : (T)0;  // window
            const T dh = ds * g + dv * ((T)1 - s);                        // dV[t]/dH[t] = 1 - S[t]
            dX[j] = dh;                                                   // dH[t]/dX[t] = 1
            if (t > 0) {
                if (need_dlam) {                                          // dH[t]/dlam = V[t-1]
                    const ptrdiff_t p = j - n;
                    dl += (double)(dh * (H[p] * ((T)1 - S[p])));
                }
                dv = lam[0] * dh;                                         // dH[t]/dV[t-1] = lam
            }
        }
        if (need_dlam) dlam_part[i] = dl;
        """),
}

_kernels = {}


def _cupy_of(a):
    """The array module of a, which must be CuPy: the kernels are CUDA code."""
    xp = get_xp(a)
    if not hasattr(xp, "ElementwiseKernel"):
        raise TypeError(f"dsatgo_np.gpu kernels need CuPy arrays, got arrays of {xp.__name__}; "
                        "use neuron.lif_forward / lif_backward (kernels.of(x) picks for you)")
    return xp


def _kernel(xp, name: str):
    """The ElementwiseKernel `name` of _SOURCES, built on first use (CuPy compiles it per dtype
    at its first call and caches the binary on disk)."""
    if name not in _kernels:
        in_params, out_params, body = _SOURCES[name]
        _kernels[name] = xp.ElementwiseKernel(in_params, out_params, body, f"dsatgo_lif_{name}",
                                              preamble=_PREAMBLE, options=_OPTIONS)
    return _kernels[name]


def lif_forward(X, lam, rule, smooth: bool = False, detach_reset: bool = False,
                threshold_grad: bool = False, f_c: float = 1.0):
    """neuron.lif_forward on CuPy arrays. X: [T, B, ...] -> (S [T, B, ...], neuron.LIFCache).

    A rule that does not measure H (rule.measures False) gives theta[t], k[t] without looking
    at H[t]: they are taken first, then one launch runs every step. A rule without the
    attribute is treated as measuring (one launch per step, the safe reading).
    """
    xp = _cupy_of(X)
    lam = xp.asarray(lam, dtype=X.dtype)
    T = X.shape[0]
    if X.size == 0:
        return neuron.lif_forward(X, lam, rule, smooth, detach_reset, threshold_grad, f_c)
    X = xp.ascontiguousarray(X)                          # a direct-encoded input has stride 0
    H, S = xp.empty_like(X), xp.empty_like(X)            # (T, B, ...) each, C-contiguous
    x, h, s = (a.reshape(T, -1) for a in (X, H, S))      # (T, n): one row per step
    lam1 = lam.reshape(1)
    if not getattr(rule, "measures", True):
        steps = [rule(X[t], t) for t in range(T)]        # independent of H: ask them first
        theta, k, mu, sigma = neuron.stack_steps(steps, xp, X.dtype)   # (T,) each
        _kernel(xp, "forward_all_steps")(x, theta, k, lam1, T, x.shape[1], bool(smooth), h, s,
                                         size=x.shape[1])
    else:
        steps = []
        h[0] = x[0]                                      # H[0] = X[0]: V[-1] = 0
        for t in range(T):
            step = rule(H[t], t)                         # mu, sigma of H[t]: device reductions
            steps.append(step)
            theta_t, k_t = (xp.asarray(v, dtype=X.dtype).reshape(1) for v in step[:2])
            if t + 1 < T:
                _kernel(xp, "fire_reset_charge")(h[t], x[t + 1], theta_t, k_t, lam1,
                                                 bool(smooth), s[t], h[t + 1])
            else:
                _kernel(xp, "fire")(h[t], theta_t, k_t, bool(smooth), s[t])
        theta, k, mu, sigma = neuron.stack_steps(steps, xp, X.dtype)
    return S, neuron.LIFCache(H, S, lam, theta, k, mu, sigma, f_c, detach_reset, threshold_grad)


def lif_backward(dS, cache: neuron.LIFCache, need_dlam: bool = True):
    """neuron.lif_backward on CuPy arrays. dS: [T, B, ...] -> (dX [T, B, ...], dlam or None).

    One launch for all T steps; with threshold_grad, the plain backward (dtheta[t] sums over
    every neuron of step t before step t - 1 can start).
    """
    c = cache
    if c.threshold_grad or dS.size == 0:
        return neuron.lif_backward(dS, cache, need_dlam)
    xp = _cupy_of(dS)
    T = dS.shape[0]
    dS = xp.ascontiguousarray(dS)
    dX = xp.empty_like(dS)                                       # (T, B, ...)
    ds, H, S, dx = (xp.ascontiguousarray(a).reshape(T, -1) for a in (dS, c.H, c.S, dX))
    n = ds.shape[1]
    dlam_part = xp.empty(n if need_dlam else 1, dtype=xp.float64)   # per neuron
    theta, k = (xp.ascontiguousarray(a, dtype=dS.dtype) for a in (c.theta, c.k))
    _kernel(xp, "backward_all_steps")(ds, H, S, theta, k, c.lam.reshape(1), T, n,
                                      bool(c.detach_reset), bool(need_dlam), dx, dlam_part,
                                      size=n)
    if not need_dlam:
        return dX, None
    return dX, dlam_part.sum().astype(dS.dtype)
