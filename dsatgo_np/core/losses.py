"""Losses on the time-averaged readout; each returns (loss, d_out).

The readout layer emits out[t] at every step; the prediction is their mean over T
(rate decoding):  m = (1/T) sum_t out[t],  [B, K].  Since dm/dout[t] = 1/T, every step
receives the same gradient dL/dm / T.
"""
from __future__ import annotations

from ..backend import get_xp, to_numpy


def _check(out, y, label_range: bool = True):
    """Named errors for what would otherwise fail deep inside NumPy or, worse, silently: a
    readout that is not [T, B, K], an empty batch, labels that are not integer class
    indices in [0, K) (label -1 would index class K-1)."""
    if not hasattr(out, "ndim") or out.ndim != 3:
        raise ValueError(f"losses expect the readout as an array [T, B, K], got "
                         f"{getattr(out, 'shape', type(out).__name__)}")
    T, B, K = out.shape
    if T == 0 or B == 0 or K == 0:
        raise ValueError(f"losses need at least one step, sample and class: the readout has "
                         f"shape {tuple(out.shape)}")
    if not hasattr(y, "dtype"):
        raise TypeError(f"labels must be an integer array [B], got a {type(y).__name__}: pass "
                        "np.asarray(y, dtype=np.int64)")
    if y.dtype.kind not in "iu":
        raise TypeError(f"labels must be integer class indices, got dtype {y.dtype}: pass "
                        "y.astype(np.int64) (after checking they are whole numbers)")
    if y.shape != (B,):
        raise ValueError(f"labels of shape {tuple(y.shape)} do not match a batch of "
                         f"{B}: expected integer labels of shape [B]")
    if not label_range:
        return
    lo, hi = (int(v) for v in to_numpy(get_xp(y).stack([y.min(), y.max()])))  # one read
    if lo < 0 or hi >= K:
        raise ValueError(f"labels must be class indices in [0, {K}), got values from {lo} to "
                         f"{hi}: the readout has {K} outputs; fix the labels or the number of "
                         "classes")


def _check_smoothing(e):
    if not (0 <= e < 1):                # also refuses NaN
        raise ValueError(f"label_smoothing must be in [0, 1), got {e!r}")


def cross_entropy(out, y, label_smoothing: float = 0.0, check_labels: bool = True):
    """Cross-entropy of softmax(mean_t out[t]) against labels y, averaged over the batch.

    out: [T, B, K] readout, y: [B] integer labels. With smoothing e the target is
    q = (1 - e) onehot(y) + e / K (PyTorch's convention). dL/dm = (softmax(m) - q) / B.
    Returns (loss as a 0-d array, d_out [T, B, K]). check_labels=False skips the check that
    every label lies in [0, K), a read back to the host on a GPU: for labels checked once.
    """
    _check(out, y, check_labels)
    _check_smoothing(label_smoothing)
    xp = get_xp(out)
    T, B, K = out.shape
    m = out.mean(axis=0)                                    # (B, K)
    z = m - m.max(axis=1, keepdims=True)                    # stable log-softmax
    logp = z - xp.log(xp.exp(z).sum(axis=1, keepdims=True))
    q = xp.full((B, K), label_smoothing / K, dtype=out.dtype)
    q[xp.arange(B), y] += 1.0 - label_smoothing
    loss = -(q * logp).sum() / B
    dm = (xp.exp(logp) - q) / B                             # (B, K)
    d_out = xp.broadcast_to(dm / T, out.shape).copy()       # (T, B, K): dm/dout[t] = 1/T
    return loss, d_out


def mse(out, y):
    """Mean squared error between mean_t out[t] and onehot(y), over B * K entries.

    out: [T, B, K], y: [B] -> (loss, d_out [T, B, K]); dL/dm = 2 (m - onehot) / (B K).
    """
    _check(out, y)
    xp = get_xp(out)
    T, B, K = out.shape
    m = out.mean(axis=0)
    target = xp.zeros((B, K), dtype=out.dtype)
    target[xp.arange(B), y] = 1.0
    diff = m - target
    loss = (diff * diff).mean()
    d_out = xp.broadcast_to(2.0 * diff / (B * K * T), out.shape).copy()
    return loss, d_out


def accuracy(out, y) -> float:
    """Share of samples whose time-averaged readout peaks at the label."""
    _check(out, y)
    y = get_xp(out).asarray(y)                 # labels on the readout's device
    return float((out.mean(axis=0).argmax(axis=1) == y).mean())
