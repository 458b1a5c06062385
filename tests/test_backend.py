"""NumPy/CuPy neutrality: the CuPy path must match NumPy; it skips cleanly without a GPU."""
import numpy as np
import pytest

import dsatgo_np as dn
from dsatgo_np import backend

needs_gpu = pytest.mark.skipif(not backend.gpu_available(), reason="CuPy or a GPU is absent")


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


@needs_gpu
@pytest.mark.parametrize("method", dn.METHODS)
def test_cupy_matches_numpy(method):
    import cupy as cp
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 4)
    nets = [dn.models.cnn((1, 8, 8), (4, 6), 3, T=3, method=method, neuron="plif", seed=1)
            for _ in range(2)]
    nets[1].to("cupy")
    results = []
    for net, xp in zip(nets, (np, cp)):
        out = net.forward(dn.encode.direct(xp.asarray(x), 3))
        loss, d = dn.losses.cross_entropy(out, xp.asarray(y))
        net.backward(d)
        results.append((backend.to_numpy(out), {n: backend.to_numpy(p.grad) for n, p in net.named_parameters()}))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-4, atol=1e-5)
    for name in results[0][1]:
        np.testing.assert_allclose(results[0][1][name], results[1][1][name], rtol=1e-3, atol=1e-5,
                                   err_msg=name)
