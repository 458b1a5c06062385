"""Enough of cupy.ElementwiseKernel to run dsatgo_np/gpu/'s kernel bodies on the CPU.

Each kernel body is compiled as C++ by g++ and called once per index i, as CUDA would call it
once per thread: raw parameters are flat-indexed pointers (CuPy's CArray on C-contiguous
arrays), the others are element i of equally sized contiguous arrays, held by reference as
CuPy holds them (an output can be read before it is written), scalars are passed by value
(a scalar for a ``T`` parameter is cast to T, as CuPy casts it). -ffp-contract=off matches the
kernels' --fmad=false, so every float operation rounds as on the GPU (IEEE, round to nearest);
the math library's tanh may differ from CUDA's by an ulp. What it cannot check: NVRTC's own
compile errors and the launch itself; tests/test_cupy.py does that on a GPU.

    with dsatgo_np.xp_strict.kernel_compiler(Compiler(build_dir)):   # the stand-in runs them
        ...
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess

import numpy as np

_C = {np.dtype("float32"): "float", np.dtype("float64"): "double",
      np.dtype("int32"): "int", np.dtype("int64"): "long long", np.dtype("bool"): "bool",
      np.dtype("uint8"): "unsigned char"}
_CTYPES = {np.dtype("float32"): ctypes.c_float, np.dtype("float64"): ctypes.c_double,
           np.dtype("int32"): ctypes.c_int32, np.dtype("int64"): ctypes.c_int64,
           np.dtype("bool"): ctypes.c_bool}


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

    def _type(self, typ, dtype):
        return "T" if typ == "T" else _C[np.dtype(typ)]

    def _source(self, dtype, scalar):
        params, lines = [], []
        for (raw, typ, name), is_scalar in zip(self.ins + self.outs, scalar):
            c = self._type(typ, dtype)
            if is_scalar:
                params.append(f"{c} {name}")
            elif raw:
                params.append(f"{c}* {name}_p")
                lines.append(f"Raw<{c}> {name}{{{name}_p}};")
            else:
                params.append(f"{c}* {name}_p")
                lines.append(f"{c}& {name} = {name}_p[i];")
        return f"""#include <cmath>
#include <cstddef>
using std::fabs; using std::sqrt; using std::tanh; using std::exp; using std::log;
typedef {_C[dtype]} T;
template <typename V> struct Raw {{ V* p; V& operator[](ptrdiff_t j) const {{ return p[j]; }} }};
#define __device__
{self.preamble}
extern "C" void kernel({", ".join(params)}, long long size) {{
    for (ptrdiff_t i = 0; i < size; ++i) {{
        {" ".join(lines)}
        {{ {self.body} }}
    }}
}}
"""

    def _function(self, dtype, scalar):
        key = (dtype, scalar)
        if key not in self._compiled:
            src = self._source(dtype, scalar)
            stem = os.path.join(self.build_dir, hashlib.sha1(src.encode()).hexdigest()[:16])
            if not os.path.exists(stem + ".so"):
                with open(stem + ".cpp", "w") as f:
                    f.write(src)
                subprocess.run(["g++", "-O2", "-ffp-contract=off", "-fno-fast-math", "-shared",
                                "-fPIC", stem + ".cpp", "-o", stem + ".so"], check=True)
            fn = ctypes.CDLL(stem + ".so").kernel
            fn.argtypes = [_CTYPES[dtype if typ == "T" else np.dtype(typ)] if s
                           else ctypes.c_void_p
                           for (_, typ, _), s in zip(self.ins + self.outs, scalar)]
            fn.argtypes += [ctypes.c_int64]
            self._compiled[key] = fn
        return self._compiled[key]

    def __call__(self, *args, size=None):
        params = self.ins + self.outs
        if len(args) != len(params):
            raise TypeError(f"{self.name}: {len(params)} arguments expected, got {len(args)}")
        scalar = tuple(not isinstance(a, np.ndarray) for a in args)
        for (raw, typ, name), s in zip(params, scalar):
            if s and raw:
                raise TypeError(f"{self.name}: raw {name} must be an array")
        typed = [a.dtype for a, (_, typ, _), s in zip(args, params, scalar) if typ == "T" and not s]
        dtype = typed[0] if typed else np.dtype("float64")
        if size is None:
            size = next(a.size for a, (raw, _, _), s in zip(args, params, scalar)
                        if not raw and not s)
        for a, (raw, typ, name), s in zip(args, params, scalar):   # what the CUDA code assumes
            if s:
                continue
            want = dtype if typ == "T" else np.dtype(typ)
            if a.dtype != want or not a.flags.c_contiguous:
                raise TypeError(f"{self.name}: {name} is {a.dtype} (wants {want}), contiguous "
                                f"{a.flags.c_contiguous}")
            if not raw and a.size != size:
                raise ValueError(f"{self.name}: {name} has {a.size} elements, not {size}")
        values = [_CTYPES[dtype if typ == "T" else np.dtype(typ)](a) if s else a.ctypes.data
                  for a, (_, typ, _), s in zip(args, params, scalar)]
        self._function(dtype, scalar)(*values, size)


class Compiler:
    """What xp_strict.kernel_compiler takes: ElementwiseKernels built into build_dir."""

    def __init__(self, build_dir: str):
        self.build_dir = build_dir

    def ElementwiseKernel(self, *args, **kwargs):  # noqa: N802  (cupy's name)
        return ElementwiseKernel(*args, build_dir=self.build_dir, **kwargs)
