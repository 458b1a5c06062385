"""A strict stand-in for CuPy, backed by NumPy: the GPU code path, checked on any machine.

Its arrays behave like ``cupy.ndarray`` where a GPU program can go wrong while NumPy would let
it pass: implicit conversion, host arrays or lists mixed in, keywords and functions CuPy lacks
are refused with TypeError; reads back to the host, uploads and every operation that would
launch GPU work are counted (``count_transfers()``). Where CuPy differs from NumPy it follows
CuPy: 0-d arrays for scalars and ``allclose``, wrapped fancy indices, writable broadcast views,
other random numbers. With ``kernel_compiler(...)`` installed it runs ElementwiseKernels.
What it cannot show: CuPy's own rounding (a float32 forward on CuPy differs from NumPy by about
1e-7), its speed and its compile errors; tests/test_cupy.py checks those on a real GPU.
"""
from __future__ import annotations

import builtins
import sys

import numpy as np

from .array import (_DISPATCH, _UFUNCS, _VIEWS, _check_kwargs, _has_array,  # noqa: F401
                    _index, _refuse, _unwrap, _wrap, ndarray, ufunc)
from .counts import Transfers, _count, _counts, count_transfers  # noqa: F401


# --- module-level functions: numpy's, under CuPy's rules ------------------------------------

def asarray(a, dtype=None, order=None):
    """Host data -> device (an upload); a stand-in array stays as it is (cast if dtype asks)."""
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else ndarray(a._a.astype(dtype))
    _count("to_device")                       # a copy: later host writes do not reach it
    return ndarray(np.array(_unwrap_host(a), dtype=dtype, order=order, copy=True))


def _unwrap_host(a):
    if type(a) in (list, tuple):
        return type(a)(_unwrap_host(v) for v in a)
    return a._a if isinstance(a, ndarray) else a


def array(a, dtype=None, copy=True, order="K", ndmin=0):
    out = asarray(a, dtype)
    return ndarray(np.array(out._a, copy=copy, order=order, ndmin=ndmin))


def asnumpy(a):
    """Device -> host (counted), as cupy.asnumpy."""
    if isinstance(a, ndarray):
        _count("to_host")
        return a._a.copy()
    return np.asarray(a)


def get_array_module(*args):
    return sys.modules[__name__] if builtins.any(isinstance(a, ndarray) for a in args) else np


def _is_contiguous(a, dtype=None, **_):
    """ascontiguousarray(a) returns a itself (no copy, no launch)."""
    return isinstance(a, ndarray) and a.flags.c_contiguous and (dtype is None
                                                                or np.dtype(dtype) == a.dtype)


def _function(name: str, refused=()):
    f = getattr(np, name)

    def wrapper(*args, **kwargs):
        _check_kwargs(name, kwargs, refused)
        if name not in _VIEWS and not (name == "ascontiguousarray" and _is_contiguous(*args,
                                                                                      **kwargs)):
            _count("ops")
        if name == "histogram" and isinstance(kwargs.get("bins"), ndarray):
            _count("to_host")                  # CuPy reads device bins back to check them
        if name in _TO_ARRAY:                  # CuPy returns a 0-d array, not a Python bool
            return ndarray(np.asarray(f(*_unwrap(args, name),
                                        **{k: _unwrap(v, name) for k, v in kwargs.items()})))
        return _wrap(f(*_unwrap(args, name), **{k: _unwrap(v, name) for k, v in kwargs.items()}))
    wrapper.__name__ = wrapper.__qualname__ = name
    wrapper.__doc__ = f"numpy.{name} under CuPy's rules (refused keywords: {sorted(refused)})"
    return wrapper



# Functions that return a Python bool in NumPy and a 0-d array in CuPy.
_TO_ARRAY = {"allclose", "array_equal"}

# What CuPy's functions lack: einsum has no out/order/casting; reductions no where/initial.
_FUNCTIONS = {
    "einsum": {"out", "order", "casting"}, "sum": {"where", "initial"},
    "prod": {"where", "initial"}, "mean": {"where"}, "std": {"where", "mean", "correction"},
    "var": {"where", "mean", "correction"}, "max": {"initial", "where"},
    "min": {"initial", "where"}, "amax": {"initial", "where"}, "amin": {"initial", "where"},
    "any": {"where"}, "all": {"where"}, "clip": {"min", "max"}, "reshape": {"copy", "shape"},
}
for _name in ("zeros", "ones", "empty", "full", "zeros_like", "ones_like", "empty_like",
              "full_like", "arange", "linspace", "eye", "ascontiguousarray", "stack",
              "concatenate", "broadcast_to", "broadcast_arrays", "expand_dims", "squeeze",
              "pad", "repeat", "tile", "moveaxis", "swapaxes", "transpose", "ravel", "flip",
              "split", "copyto", "where", "take", "take_along_axis", "atleast_1d", "copy",
              "dot", "vdot", "tensordot", "outer", "argmax", "argmin", "cumsum", "diff",
              "sort", "argsort", "unique", "nonzero", "count_nonzero", "allclose", "isclose",
              "array_equal", "around", "round", "histogram", "shape", "ndim", "size", "result_type",
              "can_cast", "isscalar", "iinfo", "finfo"):
    _FUNCTIONS.setdefault(_name, ())
for _name, _refused in _FUNCTIONS.items():
    globals()[_name] = _function(_name, _refused)


for _name in _UFUNCS:
    globals()[_name] = ufunc(getattr(np, _name))
abs, mod = absolute, remainder   # noqa: A001, F821  (numpy's aliases)

# dtypes and constants are NumPy's own in CuPy too
from numpy import (bool_, dtype, e, float16, float32, float64, inf, int8,  # noqa: E402,F401
                   int16, int32, int64, intp, nan, newaxis, pi, uint8, uint32, uint64)

bool = bool_   # noqa: A001  (cupy.bool is numpy.bool)

# The namespaces and kernels, and NumPy's functions dispatched to their stand-ins.
from .devices import (Generator, _StrideTricks, broadcast_to, lib, linalg,  # noqa: E402,F401
                      random)
from .devices import _norm  # noqa: E402
from .kernels import ElementwiseKernel, kernel_compiler, runs_cuda_kernels  # noqa: E402,F401

_DISPATCH.update({getattr(np, n): globals()[n] for n in _FUNCTIONS})
_DISPATCH[np.linalg.norm] = _norm
_DISPATCH[np.lib.stride_tricks.sliding_window_view] = _StrideTricks.sliding_window_view
