"""NumPy or CuPy, chosen by the arrays themselves.

This is the only module that imports cupy. Every array function starts with
``xp = get_xp(x)`` and then uses ``xp.`` instead of ``np.``, so the same code runs on
the CPU (NumPy) and on a GPU (CuPy) without branches.
"""
from __future__ import annotations

import numpy as np

try:  # cupy is optional: `pip install dsatgo_np[gpu]`
    import cupy as _cupy
except Exception:  # ImportError, or a CUDA library that fails to load
    _cupy = None

BACKENDS = ("numpy", "cupy", "strict")     # strict: the CuPy stand-in of xp_strict.py, for tests


def gpu_available() -> bool:
    """True when cupy imports and sees at least one GPU."""
    if _cupy is None:
        return False
    try:
        return _cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def get_xp(*arrays):
    """The array module (numpy or cupy) that owns ``arrays``; numpy for plain Python values."""
    if _cupy is not None:
        for a in arrays:
            if isinstance(a, _cupy.ndarray):
                return _cupy
    return np


def get_backend(name: str):
    """The array module named ``"numpy"`` or ``"cupy"``, with a clear error when unavailable."""
    if name == "numpy":
        return np
    if name == "cupy":
        if not gpu_available():
            raise RuntimeError(
                "backend 'cupy' was asked for, but cupy is not installed or sees no GPU. "
                "Install it with `pip install dsatgo_np[gpu]` on a machine with CUDA, "
                "or use backend 'numpy'.")
        return _cupy
    raise ValueError(f"unknown backend {name!r}: choose 'numpy' or 'cupy'")


def to_numpy(x):
    """A NumPy copy of ``x`` (no copy when it already is a NumPy array)."""
    if _cupy is not None and isinstance(x, _cupy.ndarray):
        return _cupy.asnumpy(x)
    return np.asarray(x)


def to_device(x, xp):
    """``x`` as an array of module ``xp`` (numpy or cupy)."""
    if xp is np:
        return to_numpy(x)
    return xp.asarray(x)
