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


class _FakeCupy:
    """Just enough of cupy for gpu_available: runtime.getDeviceCount() returns `count` or,
    as on a machine with the CUDA libraries but no driver, raises."""
    def __init__(self, count):
        def get_device_count():
            if isinstance(count, Exception):
                raise count
            return count
        self.cuda = type("cuda", (), {})()
        self.cuda.runtime = type("runtime", (), {})()
        self.cuda.runtime.getDeviceCount = get_device_count


@pytest.mark.parametrize("count, available", [(2, True), (1, True), (0, False),
                                              (RuntimeError("no CUDA driver"), False)])
def test_gpu_available_needs_a_device_that_cupy_can_count(monkeypatch, count, available):
    monkeypatch.setattr(backend, "_cupy", _FakeCupy(count))
    assert backend.gpu_available() is available


def test_asking_for_cupy_without_a_gpu_names_both_ways_out(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", None)
    with pytest.raises(RuntimeError) as error:
        backend.get_backend("cupy")
    assert str(error.value) == ("backend 'cupy' was asked for, but cupy is not installed or "
                                "sees no GPU. Install it with `pip install dsatgo_np[gpu]` on a "
                                "machine with CUDA, or use backend 'numpy'.")


def test_dtype_follows_the_input():
    for dtype in ("float32", "float64"):
        net = dn.models.cnn((1, 8, 8), (4,), 3, T=2, dtype=dtype)
        x = dn.encode.direct(np.random.default_rng(0).normal(size=(2, 1, 8, 8)).astype(dtype), 2)
        out = net.forward(x)
        assert out.dtype == dtype
        net.backward(np.ones_like(out))
        assert all(p.grad.dtype == dtype for p in net.parameters())
