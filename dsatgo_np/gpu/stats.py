"""threshold.layer_stats and tdBN's channel statistics on the GPU: one read, float64 sums.

    stage 1, P threads:  thread i adds d = h[j] - h[0] and d^2 for j = i, i + P, ...
    stage 2, F threads:  thread i adds the partial sums i, i + F, ... of stage 1
    stage 3, 1 thread:   mu = h[0] + S / n,  sigma^2 = (Q - S^2 / n) / (n - 1)   (ddof = 1)

Subtracting h[0] (the shifted-data algorithm) keeps Q - S^2 / n free of cancellation when |mu|
is large against sigma; the sums run in a fixed order, so the same input gives the same bits.
The channel versions do the same per channel of [N, C, S].
"""
from __future__ import annotations

from .build import cuda_module, kernel, partial_count

FOLDS = 256          # stage 2's threads: stage 3 adds this many sums in one thread

# Stage 1 of layer_stats; part: (2P,) float64, sums then sums of squares.
_LAYER_PARTIALS = ("raw T h, int64 n, int64 parts", "raw float64 part", r"""
    const double shift = (double)h[0];
    double s = 0, q = 0;
    for (ptrdiff_t j = i; j < n; j += parts) {
        const double d = (double)h[j] - shift;
        s += d;
        q += d * d;
    }
    part[i] = s;
    part[parts + i] = q;
    """)

# Stage 2, for `groups` independent reductions of `parts` pairs each (layer: 1 group).
_FOLD = ("raw float64 part, int64 parts, int64 folds, int64 groups", "raw float64 fold", r"""
    const ptrdiff_t g = i / folds, f = i % folds;
    double s = 0, q = 0;
    for (ptrdiff_t j = f; j < parts; j += folds) {
        s += part[g * parts + j];
        q += part[(groups + g) * parts + j];
    }
    fold[g * folds + f] = s;
    fold[(groups + g) * folds + f] = q;
    """)

# Stage 3 of layer_stats: mu and sigma (ddof = 1) as 0-d arrays of h's dtype.
_LAYER_FINISH = ("raw T h, raw float64 fold, int64 folds, int64 n", "raw T mu, raw T sigma", r"""
    double s = 0, q = 0;
    for (ptrdiff_t j = 0; j < folds; ++j) { s += fold[j]; q += fold[folds + j]; }
    const double var = (q - s * s / n) / (n - 1);
    mu[0] = (T)((double)h[0] + s / n);
    sigma[0] = (T)sqrt(var < 0 ? 0.0 : var);           // NaN stays NaN (n = 1: 0 / 0)
    """)


def reduce_in_stages(xp, part, parts: int, groups: int = 1, out=None):
    """Stage 2: (2 groups parts,) partial sums -> (2 groups folds,) sums, and folds; out: a
    buffer of that size to reuse."""
    folds = min(FOLDS, parts)
    fold = xp.empty(2 * groups * folds, dtype=xp.float64) if out is None else out
    kernel(xp, "fold", *_FOLD)(part, parts, folds, groups, fold, size=groups * folds)
    return fold, folds


def layer_stats(h):
    """threshold.layer_stats on the GPU: (mu, sigma) of all of h, 0-d arrays of h's dtype,
    sigma with ddof = 1; the sums in float64, in one read of h."""
    xp = cuda_module(h)
    h = xp.ascontiguousarray(h)
    n = h.size
    parts = partial_count(n)
    part = xp.empty(2 * parts, dtype=xp.float64)
    kernel(xp, "layer_partials", *_LAYER_PARTIALS)(h, n, parts, part, size=parts)
    fold, folds = reduce_in_stages(xp, part, parts)
    mu, sigma = xp.empty((), dtype=h.dtype), xp.empty((), dtype=h.dtype)
    kernel(xp, "layer_finish", *_LAYER_FINISH)(h, fold, folds, n, mu, sigma, size=1)
    return mu, sigma


# --- per channel: x as [N, C, S], the statistics of each channel c over N and S -----------

# Partial sums of channel c: thread i works on channel c = i / parts (or i % channels when
# S < 32, so that neighbouring threads read neighbouring values in both layouts).
_CHANNEL_INDEX = r"""
__device__ void channel_of(ptrdiff_t i, ptrdiff_t channels, ptrdiff_t parts, bool c_fastest,
                           ptrdiff_t* c, ptrdiff_t* p) {
    if (c_fastest) { *c = i % channels; *p = i / channels; }
    else { *c = i / parts; *p = i % parts; }
}
"""

# CHANNELS and SPACE (values per sample and channel) are compiled in (build.kernel's consts).
_CHANNEL_PARTIALS = (
    "raw T x, raw T y, int64 m, int64 parts, bool c_fastest, bool products",
    "raw float64 part", r"""
    // products: sums of x and of x * y (BatchNorm's backward); else of x - x[c, 0] and its
    // square (the forward's mean and variance, shifted by the channel's first value)
    ptrdiff_t c, p;
    channel_of(i, CHANNELS, parts, c_fastest, &c, &p);
    const double shift = products ? 0.0 : (double)x[c * SPACE];
    double s = 0, q = 0;
    for (ptrdiff_t j = p; j < m; j += parts) {
        const long long nn = j / SPACE;
        const long long at = (nn * CHANNELS + c) * SPACE + (j - nn * SPACE);
        if (products) {
            s += (double)x[at];
            q += (double)(x[at] * y[at]);
        } else {
            const double d = (double)x[at] - shift;
            s += d;
            q += d * d;
        }
    }
    part[c * parts + p] = s;
    part[(CHANNELS + c) * parts + p] = q;
    """)

# Per channel: the biased mean and variance, and 1 / sqrt(var + eps), in x's dtype.
_CHANNEL_MOMENTS = (
    "raw T x, raw float64 fold, int64 folds, int64 channels, int64 space, int64 m, float64 eps",
    "T mean, T var, T inv_std", r"""
    double s = 0, q = 0;
    for (ptrdiff_t j = 0; j < folds; ++j) {
        s += fold[i * folds + j];
        q += fold[(channels + i) * folds + j];
    }
    const double v = (q - s * s / m) / m;
    mean = (T)((double)x[i * space] + s / m);
    var = (T)(v < 0 ? 0.0 : v);
    inv_std = (T)1 / sqrt(var + (T)eps);
    """)

_CHANNEL_SUMS = ("raw float64 fold, int64 folds, int64 channels", "T a, T b", r"""
    double s = 0, q = 0;
    for (ptrdiff_t j = 0; j < folds; ++j) {
        s += fold[i * folds + j];
        q += fold[(channels + i) * folds + j];
    }
    a = (T)s;
    b = (T)q;
    """)


def _channel_partials(xp, x, y, products: bool):
    """Stages 1 and 2 per channel of x [N, C, ...]: (fold, folds, C, S, M)."""
    N, C = x.shape[:2]
    space = x.size // max(N * C, 1)
    m = N * space                                          # values per channel
    parts = max(1, min(partial_count(m), (1 << 17) // C))
    part = xp.empty(2 * C * parts, dtype=xp.float64)
    kernel(xp, "channel_partials", *_CHANNEL_PARTIALS, preamble=_CHANNEL_INDEX,
           consts=dict(CHANNELS=C, SPACE=space))(x, y, m, parts, space < 32, products, part,
                                                 size=C * parts)
    fold, folds = reduce_in_stages(xp, part, parts, groups=C)
    return fold, folds, C, space, m


def channel_moments(x, eps: float):
    """Per channel of x [N, C, ...]: (mean, var, inv_std), each (C,) in x's dtype; var is
    biased (what BatchNorm normalises with), inv_std = 1 / sqrt(var + eps)."""
    xp = cuda_module(x)
    x = xp.ascontiguousarray(x)
    fold, folds, C, space, m = _channel_partials(xp, x, x, products=False)
    mean, var, inv_std = (xp.empty(C, dtype=x.dtype) for _ in range(3))
    kernel(xp, "channel_moments", *_CHANNEL_MOMENTS)(x, fold, folds, C, space, m, float(eps),
                                                     mean, var, inv_std)
    return mean, var, inv_std


def channel_sums(a, b):
    """Per channel of a, b [N, C, ...] (the same shape): (sum of a, sum of a * b), (C,) each
    in a's dtype; BatchNorm's dbeta and dgamma."""
    xp = cuda_module(a)
    a, b = xp.ascontiguousarray(a), xp.ascontiguousarray(b)
    fold, folds, C, _, _ = _channel_partials(xp, a, b, products=True)
    sa, sb = xp.empty(C, dtype=a.dtype), xp.empty(C, dtype=a.dtype)
    kernel(xp, "channel_sums", *_CHANNEL_SUMS)(fold, folds, C, sa, sb)
    return sa, sb
