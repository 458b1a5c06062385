"""Building and caching the CUDA kernels of dsatgo_np.gpu.

Every kernel is a ``cupy.ElementwiseKernel``: one CUDA thread per index ``i`` of ``size``, the
only kind that tests/cuda_emulator.py can also compile as C++ for the CPU. Kernels are compiled
without fused multiply-adds (``--fmad=false``), so each operation rounds as the plain core's
separate array operations do. Nothing here imports cupy: the module comes from the arrays.
"""
from __future__ import annotations

import hashlib

from ..backend import get_xp

OPTIONS = ("--fmad=false",)            # no a * b + c contracted to fma: the plain roundings

_cache: dict = {}


def cuda_module(a):
    """The array module of a, which must compile CUDA kernels (CuPy, or the stand-in with a
    kernel compiler installed)."""
    xp = get_xp(a)
    if not hasattr(xp, "ElementwiseKernel"):
        raise TypeError(f"dsatgo_np.gpu kernels need CuPy arrays, got arrays of {xp.__name__}; "
                        "kernels.of(x) picks the kernels that fit x")
    return xp


def kernel(xp, name: str, in_params: str, out_params: str, body: str, preamble: str = "",
           consts: dict | None = None):
    """The ElementwiseKernel `name`, built on first use for module xp (CuPy compiles it per
    dtype at its first call and caches the binary on disk).

    consts: numbers compiled into the kernel as constants (``constexpr``), one variant per
    set of values: an index divided by a constant becomes a multiplication, where a division
    by a run-time value is a long subroutine on a GPU (tens of instructions, 64-bit); and
    every option fixed for a layer is one argument less to pass at each launch.
    """
    consts = consts or {}
    key = (getattr(xp, "__name__", ""), id(xp), name, tuple(sorted(consts.items())))
    if key not in _cache:
        lines = "".join(f"constexpr {_constant(v)};\n".replace("NAME", k)
                        for k, v in sorted(consts.items()))
        suffix = hashlib.sha1(lines.encode()).hexdigest()[:12] if lines else ""
        _cache[key] = xp.ElementwiseKernel(in_params, out_params, body,
                                           f"dsatgo_{name}" + (f"_{suffix}" if suffix else ""),
                                           preamble=lines + preamble, options=OPTIONS)
    return _cache[key]


def _constant(value) -> str:
    """A C++ constant declaration of value, with NAME for its name; floats exactly (hex)."""
    if isinstance(value, bool):
        return f"bool NAME = {'true' if value else 'false'}"
    if isinstance(value, float):
        return f"double NAME = {value.hex()}"
    return (f"int NAME = {int(value)}" if -2**31 <= value < 2**31
            else f"long long NAME = {int(value)}")


def partial_count(n: int, per_thread: int = 16, most: int = 1 << 16) -> int:
    """How many threads share a reduction of n values: about per_thread values each, at
    most `most` threads (enough to keep every multiprocessor of a large GPU busy)."""
    return max(1, min(most, -(-n // per_thread)))
