"""The stand-in's array, ndarray, and its ufuncs: NumPy arrays under CuPy's rules."""
from __future__ import annotations

import builtins

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


# Functions and methods that make views or read metadata: they launch nothing on a GPU.
_VIEWS = {"reshape", "transpose", "swapaxes", "squeeze", "view", "broadcast_to",
          "broadcast_arrays", "expand_dims", "moveaxis", "atleast_1d", "split", "shape",
          "ndim", "size", "result_type", "can_cast", "isscalar", "iinfo", "finfo", "empty",
          "empty_like"}

# The ufuncs CuPy has (a NumPy ufunc outside this set is refused).
_UFUNCS = {"add", "subtract", "multiply", "divide", "true_divide", "floor_divide", "power",
           "negative", "positive", "absolute", "exp", "expm1", "log", "log1p", "sqrt", "square",
           "reciprocal", "tanh", "sin", "cos", "arctan", "sign", "floor", "ceil", "rint",
           "maximum", "minimum", "fmax", "fmin", "greater", "greater_equal", "less",
           "less_equal", "equal", "not_equal", "logical_and", "logical_or", "logical_not",
           "isnan", "isinf", "isfinite", "remainder", "matmul", "copysign", "fabs", "signbit",
           "bitwise_and", "bitwise_or", "bitwise_xor", "invert", "logical_xor"}

# numpy function -> its stand-in, filled by the package (__array_function__ looks here).
_DISPATCH: dict = {}
