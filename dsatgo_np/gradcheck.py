"""Finite-difference checks of hand-written backward passes.

A backward pass computes a vector-Jacobian product: given ``dout = dL/dout`` it returns
``dL/dx = J^T dout``. The numerical version perturbs one entry of ``x`` at a time and
measures the change of the scalar ``sum(f(x) * dout)`` with central differences:

    dL/dx_i ~ [sum(f(x + h e_i) * dout) - sum(f(x - h e_i) * dout)] / (2 h)

Always check in float64: with float32, h = 1e-6 is below the rounding error.
The inputs are never modified: every perturbation happens on a private copy.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from .backend import get_xp, to_numpy


class GradientCheckError(AssertionError):
    """An analytic gradient disagrees with its finite-difference estimate."""


def numerical_vjp(f: Callable, x, dout, h: float = 1e-6):
    """Central-difference estimate of ``J^T dout`` for ``out = f(x)``; ``x`` is not modified."""
    xp = get_xp(x)
    if x.dtype != xp.float64:
        raise TypeError(f"gradient checks need float64 inputs, got {x.dtype}: "
                        "build the inputs with dtype=np.float64")
    x = x.copy()  # private copy: perturbed in place below, the caller's array is untouched
    grad = xp.zeros_like(x)
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)
    for i in range(flat_x.size):
        old = flat_x[i].copy()
        flat_x[i] = old + h
        plus = xp.sum(f(x) * dout)
        flat_x[i] = old - h
        minus = xp.sum(f(x) * dout)
        flat_x[i] = old
        flat_g[i] = (plus - minus) / (2 * h)
    return grad


def rel_error(a, b, eps: float = 1e-12) -> float:
    """max |a - b| / max(|a| + |b|, eps), elementwise then the worst entry: 0 for equal arrays."""
    a, b = to_numpy(a).astype(np.float64), to_numpy(b).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a) + np.abs(b), eps)))


def check_backward(forward: Callable, inputs: Mapping[str, object], dout,
                   grads: Mapping[str, object], h: float = 1e-6, tol: float = 1e-6,
                   atol: float = 1e-9) -> dict:
    """Compare analytic gradients with numerical VJPs, one input at a time.

    forward: called as ``forward(**inputs)``, returns the output array
    inputs:  name -> float64 array (the point at which to check)
    dout:    upstream gradient, same shape as the output
    grads:   name -> analytic dL/d(name), for each name to check (a subset of inputs)

    An entry passes when ``|a - n| <= atol + tol * (|a| + |n|)``, the worst entry counting
    (``atol`` absorbs the round-off of gradients that are exactly zero).
    Returns {name: worst relative error}; raises GradientCheckError when any entry fails.
    """
    errors, failures = {}, []
    for name, analytic in grads.items():
        if name not in inputs:
            raise KeyError(f"check_backward: gradient {name!r} has no matching input; "
                           f"inputs are {sorted(inputs)}")

        def f_of(v, name=name):
            return forward(**{**inputs, name: v})

        numeric = numerical_vjp(f_of, inputs[name], dout, h=h)
        a, n = to_numpy(analytic), to_numpy(numeric)
        if a.shape != n.shape:
            raise GradientCheckError(f"{name}: analytic gradient has shape {a.shape}, "
                                     f"input has shape {n.shape}")
        excess = np.abs(a - n) - (atol + tol * (np.abs(a) + np.abs(n)))
        errors[name] = rel_error(a, n)
        if a.size and not np.all(excess <= 0):          # NaN or inf fails too
            i = tuple(int(j) for j in np.unravel_index(np.argmax(excess), a.shape))
            failures.append(f"{name}: worst entry {i}: analytic {a[i]:.8g}, numerical {n[i]:.8g} "
                            f"(relative error {errors[name]:.2e}, tolerance {tol:.0e})")
    if failures:
        raise GradientCheckError("backward disagrees with finite differences:\n  "
                                 + "\n  ".join(failures))
    return errors
