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
from numpy.lib.mixins import NDArrayOperatorsMixin

from .counts import Transfers, _count, _counts, count_transfers  # noqa: F401


def _refuse(what: str, why: str):
    raise TypeError(f"{what} {why} (xp_strict refuses what CuPy refuses: the GPU path would "
                    "fail there; use only calls that cupy.ndarray supports)")


def _check_kwargs(name: str, kwargs: dict, refused):
    for key in kwargs:
        if key in refused:
            _refuse(f"{name}({key}=...)", "is not supported by CuPy")


def _unwrap(x, name: str):
    """Stand-in arrays -> their NumPy arrays; a NumPy array here is a host buffer: refused."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        _refuse(f"{name}: a NumPy array operand", "is host memory; CuPy raises 'Unsupported "
                "type numpy.ndarray' (move it first with xp.asarray)")
    if type(x) in (list, tuple):
        return type(x)(_unwrap(v, name) for v in x)
    return x


def _wrap(x):
    """NumPy results -> stand-in arrays; NumPy scalars become 0-d arrays, as CuPy returns."""
    if isinstance(x, np.ndarray):
        return ndarray(x)
    if isinstance(x, np.generic):
        return ndarray(np.asarray(x))
    if type(x) in (list, tuple):
        return type(x)(_wrap(v) for v in x)
    return x


# --- ufuncs -------------------------------------------------------------------------------

_UFUNC_KWARGS = {"out", "dtype", "casting", "where"}       # what cupy.ufunc.__call__ takes
_UFUNC_METHODS = {"__call__": None, "outer": None, "at": {"add", "maximum", "minimum"},
                  "reduce": {"add", "multiply"}, "accumulate": {"add", "multiply"},
                  "reduceat": {"add"}}                      # CuPy implements these only


def _apply_ufunc(uf, method: str, inputs, kwargs):
    name = f"numpy.{uf.__name__}" + ("" if method == "__call__" else f".{method}")
    if uf.__name__ not in _UFUNCS:
        _refuse(name, "has no CuPy ufunc in this stand-in (numpy.vecdot, matvec, vecmat: CuPy "
                "has none; add others to _UFUNCS if docs.cupy.dev lists them)")
    if method not in _UFUNC_METHODS or (_UFUNC_METHODS[method] is not None
                                        and uf.__name__ not in _UFUNC_METHODS[method]):
        _refuse(name, "is not implemented by CuPy")
    allowed = _UFUNC_KWARGS if method == "__call__" else {"axis", "dtype", "out", "keepdims"}
    _check_kwargs(name, kwargs, set(kwargs) - allowed)
    out = kwargs.get("out")
    if out is not None:
        out = out if isinstance(out, tuple) else (out,)
        kwargs = dict(kwargs, out=tuple(_unwrap(o, name) for o in out))
    if method == "at":                                     # indices may be host data
        a, idx, *rest = inputs
        args = (_unwrap(a, name), _index(idx)) + tuple(_unwrap(r, name) for r in rest)
    else:
        for x in inputs:
            if type(x) in (list, tuple):
                _refuse(f"{name}: a {type(x).__name__} operand", "is refused by CuPy's ufuncs "
                        "('Unsupported type'): pass an array (xp.asarray) or a scalar")
        args = tuple(_unwrap(x, name) for x in inputs)
    kwargs = {k: _unwrap(v, name) if k != "out" else v for k, v in kwargs.items()}
    _count("ops")
    result = getattr(uf, method)(*args, **kwargs)
    if out is not None:                                    # a += b keeps the object a
        return out[0] if len(out) == 1 else out
    return _wrap(result)


class ufunc:
    """A NumPy ufunc under CuPy's rules: cupy.exp(numpy_array) raises, as here."""

    def __init__(self, uf):
        self._uf, self.__name__ = uf, uf.__name__
        self.nin, self.nout = uf.nin, uf.nout

    def __call__(self, *args, **kwargs):
        return _apply_ufunc(self._uf, "__call__", args, kwargs)

    def __getattr__(self, method):
        if method not in _UFUNC_METHODS:
            raise AttributeError(method)
        return lambda *args, **kwargs: _apply_ufunc(self._uf, method, args, kwargs)


# --- the array ------------------------------------------------------------------------------

def _index(key):
    """Index with stand-in arrays unwrapped; host index arrays are allowed (CuPy uploads them)."""
    if isinstance(key, ndarray):
        if key.dtype == np.bool_ and key.ndim > 0:         # the result's size: a sync
            _count("to_host")
        return key._a
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    if isinstance(key, (np.ndarray, list)):
        _count("to_device")
    return key


def _has_array(key) -> bool:
    keys = key if isinstance(key, tuple) else (key,)
    return builtins.any(isinstance(k, (ndarray, np.ndarray, list)) for k in keys)


def _to_host(read):
    """An ndarray method that reads the array back to the host: counted."""
    def method(self, *args):
        _count("to_host")
        return read(self._a, *args)
    return method


# method -> keywords CuPy's method lacks (CuPy's signatures, docs.cupy.dev)
_METHODS = {"reshape": {"copy"}, "transpose": (), "swapaxes": (), "squeeze": (), "ravel": (),
            "flatten": (), "copy": (), "view": (), "take": (), "repeat": (),
            "sum": {"where", "initial"}, "prod": {"where", "initial"}, "mean": {"where"},
            "std": {"where", "mean", "correction"}, "var": {"where", "mean", "correction"},
            "max": {"initial", "where"}, "min": {"initial", "where"}, "argmax": (),
            "argmin": (), "any": {"where"}, "all": {"where"}, "cumsum": (), "clip": (),
            "dot": (), "nonzero": (), "round": ()}


class _Flags:
    """cupy.ndarray.flags: c_contiguous, f_contiguous and owndata only (no writeable)."""
    __slots__ = ("c_contiguous", "f_contiguous", "owndata")

    def __init__(self, flags):
        self.c_contiguous, self.f_contiguous = flags.c_contiguous, flags.f_contiguous
        self.owndata = flags.owndata


def _wrapped_indices(key, shape):
    """Integer index arrays taken modulo their axis's length: CuPy wraps an out-of-bounds
    fancy index around, where NumPy raises IndexError."""
    keys = key if isinstance(key, tuple) else (key,)
    if builtins.any(k is None or k is Ellipsis for k in keys):
        return key
    out = tuple(np.mod(k, shape[i]) if isinstance(k, np.ndarray) and k.dtype.kind in "iu"
                and i < len(shape) and shape[i] else k for i, k in enumerate(keys))
    return out if isinstance(key, tuple) else out[0]


class ndarray(NDArrayOperatorsMixin):
    """An array "on the device": wraps a NumPy array that only explicit transfers reveal."""
    __slots__ = ("_a",)

    def __init__(self, a):
        if not isinstance(a, np.ndarray):
            raise TypeError("xp_strict.ndarray wraps a NumPy array; build arrays with "
                            "xp_strict.asarray(...)")
        self._a = a

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed (as for "
                        "cupy.ndarray): call backend.to_numpy(x) or xp.asnumpy(x)")

    def __array_ufunc__(self, uf, method, *inputs, **kwargs):
        return _apply_ufunc(uf, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        impl = _DISPATCH.get(func)
        if impl is None:
            _refuse(f"numpy.{func.__name__}", "has no CuPy counterpart in this stand-in "
                    "(check docs.cupy.dev; add it to xp_strict if CuPy has it)")
        return impl(*args, **kwargs)

    # properties cupy.ndarray has
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: _Flags(self._a.flags))
    T = property(lambda self: ndarray(self._a.T))

    def __getattr__(self, name):
        if name not in _METHODS:
            raise AttributeError(f"'xp_strict.ndarray' object has no attribute {name!r}")

        def method(*args, **kwargs):
            _check_kwargs(f"ndarray.{name}", kwargs, _METHODS[name])
            if name not in _VIEWS:
                _count("ops")
            return _wrap(getattr(self._a, name)(*_unwrap(args, name),
                                                **{k: _unwrap(v, name) for k, v in kwargs.items()}))
        return method

    def fill(self, value):
        if isinstance(value, np.ndarray) and value.ndim:
            _refuse("fill(numpy_array)", "fails in CuPy (non-scalar host array)")
        _count("ops")
        self._a.fill(value._a if isinstance(value, ndarray) else value)

    def __getitem__(self, key):
        if _has_array(key):                                  # a gather; slices are views
            _count("ops")
        return _wrap(self._a[_wrapped_indices(_index(key), self._a.shape)])

    def astype(self, dtype, copy=True, **kwargs):
        """cupy.ndarray.astype: the array itself when copy=False and the dtype is its own."""
        _check_kwargs("ndarray.astype", kwargs, {"casting", "subok"} & set(kwargs))
        if not copy and np.dtype(dtype) == self.dtype:
            return self
        _count("ops")
        return ndarray(self._a.astype(dtype, **kwargs))

    def __setitem__(self, key, value):
        if isinstance(value, np.ndarray) and value.ndim and not _has_array(key):
            _refuse("x[...] = numpy_array", "(basic indexing) fails in CuPy, whose fill() takes "
                    "no non-scalar host array; move it first with xp.asarray")
        if isinstance(value, np.ndarray):
            _count("to_device")
        _count("ops")
        self._a[_wrapped_indices(_index(key), self._a.shape)] = (
            value._a if isinstance(value, ndarray) else value)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (ndarray(np.asarray(row)) for row in self._a)

    # device -> host: every one is a synchronisation on a GPU
    get = _to_host(np.copy)
    item = _to_host(np.ndarray.item)
    tolist = _to_host(np.ndarray.tolist)
    __float__ = _to_host(float)
    __int__ = _to_host(int)
    __bool__ = _to_host(builtins.bool)
    __format__ = _to_host(lambda a, spec: format(a.item() if a.ndim == 0 else a, spec))
    __repr__ = __str__ = _to_host(lambda a: "xp_strict." + repr(a).replace("\n", "\n" + " " * 10))


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


# Functions and methods that make views or read metadata: they launch nothing on a GPU.
_VIEWS = {"reshape", "transpose", "swapaxes", "squeeze", "view", "broadcast_to",
          "broadcast_arrays", "expand_dims", "moveaxis", "atleast_1d", "split", "shape",
          "ndim", "size", "result_type", "can_cast", "isscalar", "iinfo", "finfo", "empty",
          "empty_like"}

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

_UFUNCS = {"add", "subtract", "multiply", "divide", "true_divide", "floor_divide", "power",
           "negative", "positive", "absolute", "exp", "expm1", "log", "log1p", "sqrt", "square",
           "reciprocal", "tanh", "sin", "cos", "arctan", "sign", "floor", "ceil", "rint",
           "maximum", "minimum", "fmax", "fmin", "greater", "greater_equal", "less",
           "less_equal", "equal", "not_equal", "logical_and", "logical_or", "logical_not",
           "isnan", "isinf", "isfinite", "remainder", "matmul", "copysign", "fabs", "signbit",
           "bitwise_and", "bitwise_or", "bitwise_xor", "invert", "logical_xor"}
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

_DISPATCH = {getattr(np, n): globals()[n] for n in _FUNCTIONS}
_DISPATCH[np.linalg.norm] = _norm
_DISPATCH[np.lib.stride_tricks.sliding_window_view] = _StrideTricks.sliding_window_view
