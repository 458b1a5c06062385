"""NumPy or CuPy, chosen by the arrays themselves.

This is the only module that imports cupy. Every array function starts with
``xp = get_xp(x)`` and then uses ``xp.`` instead of ``np.``, so the same code runs on
the CPU (NumPy) and on a GPU (CuPy) without branches.

A third array module, ``xp_strict``, is a stand-in for CuPy backed by NumPy: get_xp treats
its arrays like GPU arrays, so that the tests run the GPU code path on any machine.
"""
from __future__ import annotations

import numpy as np

import sys

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


def _strict():
    """The stand-in module if it has been imported (no array can be its own before that)."""
    return sys.modules.get(__package__ + ".xp_strict")


def get_xp(*arrays):
    """The array module (numpy, cupy or xp_strict) that owns ``arrays``; numpy for plain
    Python values and NumPy arrays."""
    strict = _strict()
    for a in arrays:
        if _cupy is not None and isinstance(a, _cupy.ndarray):
            return _cupy
        if strict is not None and isinstance(a, strict.ndarray):
            return strict
    return np


def is_numpy(xp) -> bool:
    """True for the CPU module: the one whose arrays the host reads without a transfer."""
    return xp is np


def get_backend(name: str):
    """The array module named ``"numpy"``, ``"cupy"`` or ``"strict"`` (the CuPy stand-in of
    xp_strict.py, for tests), with a clear error when unavailable."""
    if name == "numpy":
        return np
    if name == "strict":
        from . import xp_strict
        return xp_strict
    if name == "cupy":
        if not gpu_available():
            raise RuntimeError(
                "backend 'cupy' was asked for, but cupy is not installed or sees no GPU. "
                "Install it with `pip install dsatgo_np[gpu]` on a machine with CUDA, "
                "or use backend 'numpy'.")
        return _cupy
    raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")


def to_numpy(x):
    """A NumPy copy of ``x`` (no copy when it already is a NumPy array); from a device this is
    a transfer, which waits for the device's queued work."""
    if _cupy is not None and isinstance(x, _cupy.ndarray):
        return _cupy.asnumpy(x)
    strict = _strict()
    if strict is not None and isinstance(x, strict.ndarray):
        return strict.asnumpy(x)
    return np.asarray(x)


def to_device(x, xp):
    """``x`` as an array of module ``xp`` (numpy, cupy or xp_strict)."""
    if xp is np:
        return to_numpy(x)
    if get_xp(x) not in (np, xp):            # from one device module to another: via the host
        x = to_numpy(x)
    return xp.asarray(x)
