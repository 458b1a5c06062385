"""The stand-in's namespaces beside its arrays: random, linalg, lib.stride_tricks, broadcast_to.

random draws other numbers than NumPy from the same seed (Philox), as CuPy does; broadcast
views are writable, as CuPy's are.
"""
from __future__ import annotations

import numpy as np

from .array import _refuse, _unwrap, _wrap, ndarray
from .counts import _count



class _StrideTricks:
    """cupy.lib.stride_tricks: as_strided, and sliding_window_view without writeable=True."""

    @staticmethod
    def as_strided(x, shape=None, strides=None):
        return ndarray(np.lib.stride_tricks.as_strided(_unwrap(x, "as_strided"), shape, strides))

    @staticmethod
    def sliding_window_view(x, window_shape, axis=None, *, subok=False, writeable=False):
        if writeable:
            _refuse("sliding_window_view(writeable=True)", "is not supported by CuPy")
        return ndarray(np.lib.stride_tricks.sliding_window_view(
            _unwrap(x, "sliding_window_view"), window_shape, axis))


class lib:                                                 # noqa: N801  (numpy's name)
    stride_tricks = _StrideTricks


class Generator:
    """cupy.random.Generator's drawing methods, on "the device" (no transfer). CuPy draws other
    numbers than NumPy from the same seed, and so does this stand-in (Philox, not NumPy's
    PCG64): code that must draw the same numbers on every device draws on the host. Only
    shapes, dtypes and ranges of its draws are CuPy's; CuPy's Generator has no permutation."""

    def __init__(self, seed=None):
        self._rng = np.random.Generator(np.random.Philox(seed))

    def __getattribute__(self, name):
        if not name.startswith("_"):
            _count("ops")
        return object.__getattribute__(self, name)

    def random(self, size=None, dtype=np.float64):
        return _wrap(self._rng.random(size, dtype=dtype))

    def standard_normal(self, size=None, dtype=np.float64):
        return _wrap(self._rng.standard_normal(size, dtype=dtype))

    def uniform(self, low=0.0, high=1.0, size=None, dtype=np.float64):
        return _wrap(self._rng.uniform(low, high, size).astype(dtype))

    def integers(self, low, high=None, size=None, dtype=np.int64, endpoint=False):
        return _wrap(self._rng.integers(low, high, size, dtype=dtype, endpoint=endpoint))


class random:                                              # noqa: N801  (numpy's name)
    Generator = Generator

    @staticmethod
    def default_rng(seed=None):
        return Generator(seed)


def broadcast_to(x, shape):
    """cupy.broadcast_to: a view with stride 0 along the repeated axes, writable as CuPy's is
    (NumPy's is read-only); a write reaches every element that shares its memory."""
    a = _unwrap(x, "broadcast_to")
    view = np.broadcast_to(a, shape)
    return ndarray(np.lib.stride_tricks.as_strided(a, view.shape, view.strides,
                                                   writeable=a.flags.writeable))


def _norm(x, ord=None, axis=None, keepdims=False):
    _count("ops")
    return _wrap(np.linalg.norm(_unwrap(x, "linalg.norm"), ord, axis, keepdims))


class linalg:                                              # noqa: N801  (numpy's name)
    norm = staticmethod(_norm)
