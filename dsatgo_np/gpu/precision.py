"""TF32 tensor cores for the GPU's float32 matrix products: off by default, one switch to opt in.

TF32 rounds each float32 operand of a matrix product to a 10-bit mantissa before multiplying
(the sums stay float32): several times faster on tensor cores, about 1e-3 relative error per
product instead of float32's 1e-7. PyTorch uses it for convolutions by default; dsatgo_np does
not, so that a GPU run is float32 like a CPU run. ``set_tf32(True)`` (or ``DSATGO_TF32=1`` in
the environment) switches cuBLAS's math mode on the current device; docs/PERFORMANCE.md gives
its measured effect on speed and on accuracy.
"""
from __future__ import annotations

import os


def set_tf32(enabled: bool) -> str:
    """Allow (True) or forbid (False) TF32 in CuPy's float32 matrix products on the current
    device; returns what was set, for the record."""
    import cupy
    from cupy_backends.cuda.libs import cublas
    # cublasMath_t: CUBLAS_DEFAULT_MATH = 0, CUBLAS_TF32_TENSOR_OP_MATH = 3 (cublas_api.h)
    mode = (getattr(cublas, "CUBLAS_TF32_TENSOR_OP_MATH", 3) if enabled
            else getattr(cublas, "CUBLAS_DEFAULT_MATH", 0))
    cublas.setMathMode(cupy.cuda.device.get_cublas_handle(), mode)
    done = [f"cublas math mode {mode}"]
    try:                                 # CuPy's own compute type for its GemmEx calls
        from cupy._core import _routines_linalg as linalg
        linalg.set_compute_type(cupy.float32, linalg.COMPUTE_TYPE_TF32 if enabled
                                else linalg.COMPUTE_TYPE_DEFAULT)
        done.append("cupy compute type")
    except (ImportError, AttributeError):
        pass
    return ", ".join(done)


def tf32_from_env() -> bool:
    """True when DSATGO_TF32 asks for TF32 (1, true, yes, on)."""
    return os.environ.get("DSATGO_TF32", "").strip().lower() in ("1", "true", "yes", "on")
