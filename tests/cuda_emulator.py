"""Enough of cupy.ElementwiseKernel to run dsatgo_np/gpu.py's kernel bodies on the CPU.

Each kernel body is compiled as C++ by g++ and called once per index i, as CUDA would call it
once per thread: raw parameters are flat-indexed pointers (CuPy's CArray on C-contiguous
arrays), the others are element i of equally sized contiguous arrays, scalars are passed by
value. -ffp-contract=off matches the kernels' --fmad=false, so every float operation rounds
as on the GPU (IEEE, round to nearest). What it cannot check: NVRTC's own compile errors and
the launch itself; tests/test_cupy.py does that on a GPU.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import types

import numpy as np

_C = {np.dtype("float32"): "float", np.dtype("float64"): "double"}
_SCALARS = {"int32": ("int", ctypes.c_int32), "int64": ("long long", ctypes.c_int64),
            "bool": ("bool", ctypes.c_bool)}


def _parse(spec: str):
    """"raw T x, int32 n" -> [(True, "T", "x"), (False, "int32", "n")]."""
    return [(p.split()[0] == "raw", p.split()[-2], p.split()[-1]) for p in spec.split(",")]


class ElementwiseKernel:
    """cupy.ElementwiseKernel's constructor and call, for NumPy arrays, compiled for the CPU."""

    def __init__(self, in_params, out_params, operation, name="kernel", preamble="",
                 options=(), build_dir="."):
        if "--fmad=false" not in options:
            raise ValueError("the emulation rounds without fused multiply-adds only")
        self.ins, self.outs = _parse(in_params), _parse(out_params)
        self.body, self.name, self.preamble, self.build_dir = operation, name, preamble, build_dir
        self._compiled = {}

    def _source(self, dtype):
        params, raws, loads, decls, stores = [], [], [], [], []
        for raw, typ, name in self.ins + self.outs:
            if typ in _SCALARS:
                params.append(f"{_SCALARS[typ][0]} {name}")
                continue
            c = "T" if typ == "T" else _C[np.dtype(typ)]
            params.append(f"{c}* {name}_p")
            if raw:
                raws.append(f"Raw<{c}> {name}{{{name}_p}};")
            elif (raw, typ, name) in self.ins:
                loads.append(f"const {c} {name} = {name}_p[i];")
            else:
                decls.append(f"{c} {name};")
                stores.append(f"{name}_p[i] = {name};")
        return f"""#include <cmath>
#include <cstddef>
using std::fabs;
typedef {_C[dtype]} T;
template <typename V> struct Raw {{ V* p; V& operator[](ptrdiff_t j) const {{ return p[j]; }} }};
#define __device__
{self.preamble}
extern "C" void kernel({", ".join(params)}, long long size) {{
    {" ".join(raws)}
    for (ptrdiff_t i = 0; i < size; ++i) {{
        {" ".join(loads)} {" ".join(decls)}
        {{ {self.body} }}
        {" ".join(stores)}
    }}
}}
"""

    def _function(self, dtype):
        if dtype not in self._compiled:
            src = self._source(dtype)
            stem = os.path.join(self.build_dir, hashlib.sha1(src.encode()).hexdigest()[:16])
            if not os.path.exists(stem + ".so"):
                with open(stem + ".cpp", "w") as f:
                    f.write(src)
                subprocess.run(["g++", "-O2", "-ffp-contract=off", "-fno-fast-math", "-shared",
                                "-fPIC", stem + ".cpp", "-o", stem + ".so"], check=True)
            fn = ctypes.CDLL(stem + ".so").kernel
            fn.argtypes = [_SCALARS[t][1] if t in _SCALARS else ctypes.c_void_p
                           for _, t, _ in self.ins + self.outs] + [ctypes.c_int64]
            self._compiled[dtype] = fn
        return self._compiled[dtype]

    def __call__(self, *args, size=None):
        params = self.ins + self.outs
        if len(args) != len(params):
            raise TypeError(f"{self.name}: {len(params)} arguments expected, got {len(args)}")
        arrays = [(a, p) for a, p in zip(args, params) if p[1] not in _SCALARS]
        dtype = next(a.dtype for a, (_, typ, _) in arrays if typ == "T")
        if size is None:
            size = next(a.size for a, (raw, _, _) in arrays if not raw)
        for a, (raw, typ, name) in arrays:           # what the CUDA code takes for granted
            if a.dtype != (dtype if typ == "T" else np.dtype(typ)) or not a.flags.c_contiguous:
                raise TypeError(f"{self.name}: {name} is {a.dtype}, contiguous "
                                f"{a.flags.c_contiguous}")
            if not raw and a.size != size:
                raise ValueError(f"{self.name}: {name} has {a.size} elements, not {size}")
        self._function(dtype)(*[a if p[1] in _SCALARS else a.ctypes.data
                                for a, p in zip(args, params)], size)


def numpy_as_cupy(build_dir: str):
    """A stand-in for the cupy module as gpu.py uses it: NumPy arrays, C++ kernels."""
    return types.SimpleNamespace(
        __name__="cuda_emulator",
        ElementwiseKernel=lambda *a, **kw: ElementwiseKernel(*a, build_dir=build_dir, **kw),
        asarray=np.asarray, ascontiguousarray=np.ascontiguousarray, empty_like=np.empty_like,
        empty=np.empty, stack=np.stack, float64=np.float64)
