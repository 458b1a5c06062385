"""Input encodings: static data [B, ...] to input currents over time [T, B, ...]."""
from __future__ import annotations

from .backend import get_xp


def direct(x, T: int):
    """Direct encoding: the same image as input current at every step, [B, ...] -> [T, B, ...].

    The result is a read-only broadcast view (no copy): layers that see a time axis of
    stride 0 may compute their output once and broadcast it.
    """
    xp = get_xp(x)
    if T < 1:
        raise ValueError(f"T must be a positive number of time steps, got {T}")
    return xp.broadcast_to(x[None], (T,) + x.shape)


def poisson(x, T: int, rng):
    """Rate coding: spikes with probability x (in [0, 1]) at each step, [B, ...] -> [T, B, ...]."""
    xp = get_xp(x)
    return (xp.asarray(rng.random((T,) + x.shape)) < x).astype(x.dtype)
