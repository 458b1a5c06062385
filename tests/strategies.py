"""Shared hypothesis strategies: the arrays themselves are drawn, so a failure shrinks to a
small, readable counterexample (a seed for NumPy's generator cannot shrink).

Every float is finite and bounded; the bounds are chosen per test so that the values stay in
the range where the checked formula is well conditioned (finite differences in float64 with
h = 1e-6 need |x| of order 1).
"""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

# Function-scoped fixtures (the kernel-set parametrisation) set global state once per test,
# which every example of that test may share: the health check would refuse them otherwise.
FAST = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.filter_too_much, HealthCheck.too_slow])
FEW = settings(FAST, max_examples=2)


def floats(lo: float = -2.0, hi: float = 2.0):
    """Finite float64 values in [lo, hi], no subnormals (they only slow the shrinker down)."""
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False,
                     width=64)


def array(shape, lo: float = -2.0, hi: float = 2.0):
    """A float64 array of the given shape with entries in [lo, hi]."""
    return arrays(np.float64, shape, elements=floats(lo, hi))


@st.composite
def spread_array(draw, shape, lo: float = -2.0, hi: float = 2.0, min_std: float = 0.2,
                 axis: int | None = None):
    """array(shape, lo, hi) whose entries are not nearly all equal (std >= min_std), over the
    whole array, or with axis given, within every slice along that axis (BatchNorm channels).

    Layer statistics divide by the spread (BatchNorm by its std, the adaptive threshold's
    gradient by sigma): a near-constant tensor makes them ill conditioned, not wrong.
    """
    a = draw(array(shape, lo, hi))
    rows = (a.reshape(1, -1) if axis is None else np.moveaxis(a, axis, 0).reshape(shape[axis], -1))
    if rows.shape[1] < 2:
        return a
    # A deterministic, still shrinkable repair instead of a filter that would reject most of
    # the shrinker's (all-equal) candidates: add a ramp of the required spread where needed.
    ramp = np.linspace(-1.0, 1.0, rows.shape[1]) * 2 * min_std
    rows = np.where(rows.std(axis=1, keepdims=True) < min_std, np.clip(rows + ramp, lo, hi), rows)
    if axis is None:
        return rows.reshape(shape)
    return np.moveaxis(rows.reshape((shape[axis],) + tuple(np.delete(shape, axis))), 0, axis)


def labels(n: int, classes: int):
    """[n] integer labels in [0, classes)."""
    return arrays(np.int64, (n,), elements=st.integers(0, classes - 1))


def away_from_kinks(H, theta, k, margin: float = 1e-4) -> bool:
    """True when no potential H[t] lies within margin of the smooth spike's kinks theta[t] +- k[t]/2.

    H: [T, B, ...]; theta, k: (T,). At a kink the smooth spike has no derivative, so a central
    difference there measures the mean of the two one-sided slopes.
    """
    shape = (-1,) + (1,) * (H.ndim - 1)
    d = np.abs(H - theta.reshape(shape))
    return bool(np.all(np.abs(d - 0.5 * k.reshape(shape)) > margin))


EPS64 = np.finfo(np.float64).eps


def fd_atol(out, dout, h: float = 1e-6) -> float:
    """Absolute error of a central difference of sum(f(x) * dout) with step h.

    Each of the two sums rounds by about log2(n) eps sum|f * dout| (pairwise summation, n
    terms), and the difference is divided by 2 h: 8 eps sum|f * dout| / h covers both with a
    margin for n up to a few hundred. (Truncation, h^2 times a third derivative, is below it.)
    """
    return max(1e-9, 8 * EPS64 * float(np.sum(np.abs(np.asarray(out) * np.asarray(dout)))) / h)
