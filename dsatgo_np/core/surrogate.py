"""Spikes and their surrogate gradients (docs/METHOD.md sections 2 and 4).

    S = Heaviside(H - theta)                          (the tie H = theta fires)
    dS/dH ~ (1 / k) 1[|H - theta| < k / 2]            the rectangular window of width k

The window is the exact derivative of the smooth primitive clip((H - theta) / k + 1/2, 0, 1);
a forward pass with that primitive ("smooth mode") has finite differences equal to the window,
which is how the tests check BPTT.
"""
from __future__ import annotations

import math

from ..backend import get_xp


def heaviside(z):
    """1 where z >= 0, else 0, in z's dtype. The tie z == 0 fires (the released code's `>=`)."""
    return (z >= 0).astype(z.dtype)


def window(h, theta, k):
    """Rectangular surrogate dS/dH: 1/k inside |h - theta| < k/2, 0 outside; same shape as h.

    The open interval matches the primitive's kinks: at |h - theta| = k/2 both one-sided
    derivatives of clip() differ, and the tests keep inputs away from them.
    """
    xp = get_xp(h)
    inside = xp.abs(h - theta) < 0.5 * k
    return inside.astype(h.dtype) / k


def primitive(h, theta, k):
    """The smooth spike clip((h - theta) / k + 1/2, 0, 1), whose derivative in h is window()."""
    xp = get_xp(h)
    return xp.clip((h - theta) / k + 0.5, 0.0, 1.0)


def dynamic_width(z, k0: float = 1.0, v_th: float = 1.0):
    """TGO's width k = k0 * (1 + tanh(z - v_th)), paper Eq. 7; k lies in (0, 2 k0).

    Eq. 7 is written with two branches, k0 (1 + tanh(z - v_th)) when z >= v_th and
    k0 (1 - tanh(v_th - z)) otherwise; since tanh is odd they are the same expression.
    z is the adaptive threshold (width="threshold") or the layer's std (width="std").
    """
    xp = get_xp(z)
    return k0 * (1 + xp.tanh(z - v_th))


def dynamic_width_two_branches(z: float, k0: float = 1.0, v_th: float = 1.0) -> float:
    """Eq. 7 exactly as printed in the paper, for scalars; kept to test it equals dynamic_width."""
    if z >= v_th:
        return k0 * (1 + math.tanh(z - v_th))
    return k0 * (1 - math.tanh(v_th - z))


def mpd_agl_width(t: int, lam, g, v_th: float = 0.5):
    """MPD-AGL's width (IJCAI 2025): 2 g v_th at the first step, 2 sqrt(1 + lam^2) g v_th later.

    g is the mean scale of the BatchNorm that feeds the neuron: H's spread grows with it, and
    after the first step H also carries lam * V[t-1], whence the sqrt(1 + lam^2).
    t counts from 0 here (docs/METHOD.md's t = 1 is index 0).
    """
    xp = get_xp(lam, g)
    if t == 0:
        return 2 * g * v_th
    return 2 * xp.sqrt(1 + lam * lam) * g * v_th
