"""CUDA ElementwiseKernels on the stand-in, run by an installed compiler (tests/cuda_emulator.py).

With a compiler installed (``kernel_compiler``), kernels.py gives the stand-in's arrays the GPU
kernels of dsatgo_np/gpu/, whose bodies then run as C++ on the CPU; without one, a kernel call
is refused with the line that installs one.
"""
from __future__ import annotations

import contextlib

import numpy as np

from .array import _refuse, ndarray
from .counts import _count


_compiler = None


def runs_cuda_kernels() -> bool:
    """Whether a kernel compiler is installed: then kernels.py gives these arrays the GPU
    kernels (dsatgo_np/gpu/), and ElementwiseKernel runs."""
    return _compiler is not None


@contextlib.contextmanager
def kernel_compiler(compiler):
    """``with kernel_compiler(c): ...`` runs ElementwiseKernels with c.ElementwiseKernel (a
    class with cupy.ElementwiseKernel's constructor and call on NumPy arrays, such as
    tests/cuda_emulator.py's); the stand-in cannot compile CUDA itself."""
    global _compiler
    before, _compiler = _compiler, compiler
    try:
        yield compiler
    finally:
        _compiler = before


class ElementwiseKernel:
    """cupy.ElementwiseKernel, run by the installed compiler on the wrapped NumPy arrays."""

    def __init__(self, in_params, out_params, operation, name="kernel", **options):
        self._spec = (in_params, out_params, operation, name)
        self._options, self._built = options, {}

    def __call__(self, *args, size=None):
        if _compiler is None:
            _refuse(f"ElementwiseKernel {self._spec[3]}", "needs a kernel compiler: install "
                    "one with xp_strict.kernel_compiler(...) (tests/cuda_emulator.py)")
        if id(_compiler) not in self._built:
            self._built[id(_compiler)] = _compiler.ElementwiseKernel(*self._spec, **self._options)
        for a in args:
            if isinstance(a, np.ndarray):
                _refuse(f"ElementwiseKernel {self._spec[3]}: a NumPy array argument",
                        "is host memory (CuPy raises TypeError)")
        _count("ops")
        self._built[id(_compiler)](*[a._a if isinstance(a, ndarray) else a for a in args],
                                   size=size)
