"""NumPy/CuPy neutrality: NumPy by default, clear errors (CuPy itself: tests/test_cupy.py)."""
import numpy as np
import pytest

import dsatgo_np as dn
from dsatgo_np import backend


def test_numpy_is_the_default():
    x = np.zeros(3, np.float32)
    assert backend.get_xp(x) is np
    assert backend.get_xp(1.0) is np
    assert backend.to_numpy(x) is x
    assert backend.get_backend("numpy") is np


def test_unknown_or_missing_backend_is_named():
    with pytest.raises(ValueError, match="unknown backend"):
        backend.get_backend("jax")
    if not backend.gpu_available():
        with pytest.raises(RuntimeError, match="pip install dsatgo_np\\[gpu\\]"):
            backend.get_backend("cupy")


def test_dtype_follows_the_input():
    for dtype in ("float32", "float64"):
        net = dn.models.cnn((1, 8, 8), (4,), 3, T=2, dtype=dtype)
        x = dn.encode.direct(np.random.default_rng(0).normal(size=(2, 1, 8, 8)).astype(dtype), 2)
        out = net.forward(x)
        assert out.dtype == dtype
        net.backward(np.ones_like(out))
        assert all(p.grad.dtype == dtype for p in net.parameters())
