"""The LIF neuron as fused CUDA kernels: neuron.lif_forward / lif_backward's numbers, few launches.

Given theta[t] and k[t] the neuron is element-wise and BPTT couples a neuron only with itself,
so one thread carries one neuron through all T steps. A rule that measures H[t] (AT, TGO,
DS-ATGO in training) needs the mean and std of all of H[t] first: then each step is three
launches, the step's charge with its partial sums (stats.py) and their fold; the next launch
finishes those sums and applies the rule (Rule's declared theta_from / width_from / z_from).
Same contract as the plain core; tests/test_gpu_kernels.py compares them.
"""
from __future__ import annotations

from ..core import neuron
from .build import cuda_module, kernel, partial_count
from .stats import reduce_in_stages

# fire(): S = Heaviside(H - theta) (>= 0 fires, surrogate.heaviside), or in smooth mode the
# window's primitive clip((H - theta) / k + 1/2, 0, 1) (surrogate.primitive), NaN kept.
_FIRE = r"""
template <typename F>
__device__ F fire(F h, F theta, F k, bool smooth) {
    if (smooth) {
        F z = (h - theta) / k + (F)0.5;
        return z < (F)0 ? (F)0 : (z > (F)1 ? (F)1 : z);
    }
    return h - theta >= (F)0 ? (F)1 : (F)0;
}
"""

# All T steps of neuron i; theta, k: (T,); lam: (1,); x, h, s: (T, n) C-contiguous.
_ALL_STEPS = ("raw T x, raw T theta, raw T k, raw T lam, int32 steps, int64 n, bool smooth",
              "raw T h, raw T s", r"""
    T v = 0;                                            // V[-1] = 0
    for (int t = 0; t < steps; ++t) {
        const ptrdiff_t j = (ptrdiff_t)t * n + i;
        const T ht = lam[0] * v + x[j];                 // charge
        const T st = fire(ht, theta[t], k[t], smooth);  // fire
        h[j] = ht;
        s[j] = st;
        v = ht * ((T)1 - st);                           // hard reset
    }
    """)

# The rule of a step from the folded sums of d = H - shift (stats.py's stages): mu, sigma
# (ddof = 1), then theta = f_c (mu + sigma) (THETA_MEASURED) or theta_known, and for a DYNAMIC
# width k = k0 (1 + tanh(z - v_th)) with z = theta (Z_FROM 0), sigma (1) or f_c (mu + sigma)
# (2), else k_known: threshold.adaptive_threshold and surrogate.dynamic_width, operation for
# operation in T. The options are compiled in (build.kernel's consts), one variant per layer
# configuration: THETA_MEASURED, DYNAMIC, Z_FROM, F_C, K0, V_TH, SMOOTH and STEPS (T).
_RULE = r"""
template <typename F, typename A>
__device__ void rule(A fold, ptrdiff_t folds, double shift, ptrdiff_t n, F theta_known,
                     F k_known, F* theta, F* k, F* mu, F* sigma) {
    double s = 0, q = 0;
    for (ptrdiff_t j = 0; j < folds; ++j) { s += fold[j]; q += fold[folds + j]; }
    const double var = (q - s * s / n) / (n - 1);
    *mu = (F)(shift + s / n);
    *sigma = (F)sqrt(var < 0 ? 0.0 : var);                  // NaN stays NaN (n = 1: 0 / 0)
    const F measured = (F)F_C * (*mu + *sigma);
    *theta = THETA_MEASURED ? measured : theta_known;
    const F z = Z_FROM == 0 ? *theta : (Z_FROM == 1 ? *sigma : measured);
    *k = DYNAMIC ? (F)K0 * ((F)1 + tanh(z - (F)V_TH)) : k_known;
}
"""

# Step t of a measuring rule, P threads: the rule of step t - 1 from its folded sums (every
# thread computes it, thread 0 records it in rec = (theta, k, mu, sigma) rows of T), fire and
# reset step t - 1, charge step t, and the partial sums of d = H[t] - H[t][0] over j = i,
# i + P, ... (every thread computes the shift H[t][0] itself: the same operations, the same
# bits). known: the (theta, k) rows of what the rule knows before the pass.
_STEP = (
    "raw T h_prev, raw T x_t, raw float64 fold, raw T known, raw T lam, int32 t, int64 n, "
    "int64 parts, int64 folds",
    "raw T s_prev, raw T h_t, raw float64 part, raw T rec", r"""
    T th = 0, kk = 1, shift = x_t[0];                       // H[0] = X[0]: V[-1] = 0
    if (t > 0) {
        T m, sg;
        rule(fold, folds, (double)h_prev[0], n, known[t - 1], known[STEPS + t - 1],
             &th, &kk, &m, &sg);
        if (i == 0) {
            rec[t - 1] = th; rec[STEPS + t - 1] = kk; rec[2 * STEPS + t - 1] = m;
            rec[3 * STEPS + t - 1] = sg;
        }
        shift = lam[0] * (h_prev[0] * ((T)1 - fire(h_prev[0], th, kk, SMOOTH))) + x_t[0];
    }
    double s = 0, q = 0;
    for (ptrdiff_t j = i; j < n; j += parts) {
        T h = x_t[j];
        if (t > 0) {
            const T sp = fire(h_prev[j], th, kk, SMOOTH);   // fire step t - 1
            s_prev[j] = sp;
            h = lam[0] * (h_prev[j] * ((T)1 - sp)) + x_t[j];  // reset, charge step t
        }
        h_t[j] = h;
        const double d = (double)h - (double)shift;
        s += d;
        q += d * d;
    }
    part[i] = s;
    part[parts + i] = q;
    """)

# The last step, P threads: its rule (every thread computes it, thread 0 records it), then
# fire over j = i, i + P, ...
_LAST = ("raw T h_t, raw float64 fold, raw T known, int64 n, int64 folds, int64 parts",
         "raw T s, raw T rec", r"""
    const int t = STEPS - 1;
    T th, kk, m, sg;
    rule(fold, folds, (double)h_t[0], n, known[t], known[STEPS + t], &th, &kk, &m, &sg);
    if (i == 0) {
        rec[t] = th; rec[STEPS + t] = kk; rec[2 * STEPS + t] = m; rec[3 * STEPS + t] = sg;
    }
    for (ptrdiff_t j = i; j < n; j += parts) s[j] = fire(h_t[j], th, kk, SMOOTH);
    """)

# BPTT of neuron i over t = T-1..0 (neuron.lif_backward line for line); dlam_part: (n,).
_BACKWARD = (
    "raw T dS, raw T H, raw T S, raw T theta, raw T k, raw T lam, int32 steps, int64 n, "
    "bool detach_reset, bool need_dlam",
    "raw T dX, raw float64 dlam_part", r"""
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
    """)

_Z_FROM = {"theta": 0, "sigma": 1, "measured": 2, None: 0}


def lif_forward(X, lam, rule: neuron.Rule, smooth: bool = False, detach_reset: bool = False,
                threshold_grad: bool = False, f_c: float = 1.0):
    """neuron.lif_forward on the GPU. X: [T, B, ...] -> (S [T, B, ...], neuron.LIFCache).

    A rule that measures nothing gives every theta[t], k[t] before the pass: one launch for
    all steps. Otherwise two launches per step and one more, the statistics taken as H[t] is
    written.
    """
    xp = cuda_module(X)
    lam = xp.asarray(lam, dtype=X.dtype)
    T = X.shape[0]
    if X.size == 0 or X[0].size < 2:
        return neuron.lif_forward(X, lam, rule, smooth, detach_reset, threshold_grad, f_c)
    X = xp.ascontiguousarray(X)                          # a direct-encoded input has stride 0
    H, S = xp.empty_like(X), xp.empty_like(X)            # (T, B, ...) each, C-contiguous
    x, h, s = (a.reshape(T, -1) for a in (X, H, S))      # (T, n): one row per step
    n = x.shape[1]
    lam1 = lam.reshape(1)
    theta_known, k_known = rule.known_steps(T)
    if not rule.measures:
        theta, k = (xp.ascontiguousarray(a, dtype=X.dtype) for a in (theta_known, k_known))
        kernel(xp, "lif_all_steps", *_ALL_STEPS, preamble=_FIRE)(
            x, theta, k, lam1, T, n, bool(smooth), h, s, size=n)
        mu = sigma = xp.full(T, float("nan"), dtype=X.dtype)
        return S, neuron.LIFCache(H, S, lam, theta, k, mu, sigma, f_c, detach_reset,
                                  threshold_grad)
    rec = xp.empty((4, T), dtype=X.dtype)                 # theta, k, mu, sigma
    known = xp.empty((2, T), dtype=X.dtype)              # what the rule knows: theta, k
    for row, values in enumerate((theta_known, k_known)):
        if values is not None:
            known[row] = values
    cfg = rule.cfg
    options = dict(THETA_MEASURED=rule.theta_from == "measured",
                   DYNAMIC=rule.width_from == "dynamic", Z_FROM=_Z_FROM[rule.z_from],
                   F_C=float(cfg.f_c), K0=float(cfg.k0), V_TH=float(cfg.v_th),
                   SMOOTH=bool(smooth), STEPS=T)
    parts = partial_count(n)
    part = xp.empty(2 * parts, dtype=xp.float64)
    fold, folds = part, 0                                # no sums before the first step
    step = kernel(xp, "lif_step", *_STEP, preamble=_FIRE + _RULE, consts=options)
    for t in range(T):                                   # rule t - 1, fire t - 1, charge t
        prev = max(t - 1, 0)
        step(h[prev], x[t], fold, known, lam1, t, n, parts, folds, s[prev], h[t], part, rec,
             size=parts)
        fold, folds = reduce_in_stages(xp, part, parts, out=None if t == 0 else fold)
    kernel(xp, "lif_last", *_LAST, preamble=_FIRE + _RULE, consts=options)(
        h[T - 1], fold, known, n, folds, parts, s[T - 1], rec, size=parts)
    theta, k, mu, sigma = rec
    return S, neuron.LIFCache(H, S, lam, theta, k, mu, sigma, f_c, detach_reset, threshold_grad)


def lif_backward(dS, cache: neuron.LIFCache, need_dlam: bool = True):
    """neuron.lif_backward on the GPU. dS: [T, B, ...] -> (dX [T, B, ...], dlam or None).

    One launch for all T steps; with threshold_grad, the plain backward (dtheta[t] sums over
    every neuron of step t before step t - 1 can start).
    """
    c = cache
    if c.threshold_grad or dS.size == 0:
        return neuron.lif_backward(dS, cache, need_dlam)
    xp = cuda_module(dS)
    T = dS.shape[0]
    dS = xp.ascontiguousarray(dS)
    dX = xp.empty_like(dS)                                       # (T, B, ...)
    ds, H, S, dx = (xp.ascontiguousarray(a).reshape(T, -1) for a in (dS, c.H, c.S, dX))
    n = ds.shape[1]
    dlam_part = xp.empty(n if need_dlam else 1, dtype=xp.float64)   # per neuron
    theta, k = (xp.ascontiguousarray(a, dtype=dS.dtype) for a in (c.theta, c.k))
    kernel(xp, "lif_backward", *_BACKWARD)(ds, H, S, theta, k, c.lam.reshape(1), T, n,
                                           bool(c.detach_reset), bool(need_dlam), dx,
                                           dlam_part, size=n)
    if not need_dlam:
        return dX, None
    return dX, dlam_part.sum().astype(dS.dtype)
