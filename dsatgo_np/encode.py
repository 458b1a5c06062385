"""Input encodings: static data [B, ...] to input currents over time [T, B, ...].

Both refuse what would silently train on garbage: an empty batch, a T that is not a positive
integer, and non-finite values (one NaN pixel would make every gradient of the first layer NaN
while the loss stays finite).
"""
from __future__ import annotations

import numbers

from .backend import get_xp


def _check(x, T, name, finite: bool = True):
    if not isinstance(T, numbers.Integral) or isinstance(T, bool) or T < 1:
        raise ValueError(f"{name}: T must be a positive integer number of time steps, got {T!r}")
    if not hasattr(x, "ndim") or not hasattr(x, "dtype"):
        raise TypeError(f"{name}: x must be an array [B, ...] (NumPy or CuPy), got "
                        f"{type(x).__name__}: pass np.asarray(x, dtype=np.float32)")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{name}: x must be a batch [B, ...] of at least one sample, got shape "
                         f"{tuple(x.shape)}")
    xp = get_xp(x)
    if finite and x.dtype.kind == "f" and not bool(xp.isfinite(x).all()):
        raise ValueError(f"{name}: x holds non-finite values (NaN or inf): clean the input "
                         "(e.g. np.nan_to_num) or fix where it came from")


def direct(x, T: int, check_finite: bool = True):
    """Direct encoding: the same image as input current at every step, [B, ...] -> [T, B, ...].

    The result is a read-only broadcast view (no copy): layers that see a time axis of
    stride 0 may compute their output once and broadcast it. check_finite=False skips the
    NaN/inf check, a read back to the host on a GPU: for data already checked once (the
    training command checks its data set when it loads it).
    """
    _check(x, T, "encode.direct", check_finite)
    xp = get_xp(x)
    return xp.broadcast_to(x[None], (T,) + x.shape)


def poisson(x, T: int, rng):
    """Rate coding: spikes with probability x (in [0, 1]) at each step, [B, ...] -> [T, B, ...].

    rng: a generator of x's array module (np.random.default_rng, cupy.random.default_rng),
    so that the draws are made where x lives; a NumPy generator with CuPy data works too,
    at the price of a copy to the device per call."""
    _check(x, T, "encode.poisson")
    xp = get_xp(x)
    if bool(((x < 0) | (x > 1)).any()):                   # one host read
        raise ValueError("encode.poisson: x must hold firing probabilities in [0, 1]: scale the "
                         "input (e.g. x / 255) before rate coding")
    return (xp.asarray(rng.random((T,) + x.shape)) < x).astype(x.dtype)
