"""CuPy on a real GPU against NumPy; those tests are skipped cleanly without one.

Without a GPU, tests/test_xp_strict.py runs the same code path on a CuPy stand-in, and
tests/test_gpu_kernels.py runs the kernel bodies of dsatgo_np/gpu/ as C++ on the CPU. On a GPU:
every model and method on CuPy against NumPy (tests/test_gpu_kernels.py adds each GPU kernel
against the plain core). `python bench/gpu_check.py` runs both files first.
"""
import numpy as np
import pytest

import dsatgo_np as dn
from dsatgo_np import backend, kernels, neuron
from dsatgo_np.gpu import conv as gpu_conv, neuron as gpu_neuron
from tiny_models import build  # noqa: E402

needs_gpu = pytest.mark.skipif(not backend.gpu_available(), reason="CuPy or a GPU is absent")


@needs_gpu
@pytest.mark.parametrize("neuron_kind", ["lif", "plif"])
@pytest.mark.parametrize("method", dn.METHODS)
@pytest.mark.parametrize("name", ["mlp", "cnn", "vgg", "sew_resnet"])
def test_cupy_matches_numpy(name, method, neuron_kind):
    """float64, as gradients are checked: cuBLAS and OpenBLAS add in other orders, so the two
    differ by round-off only, about K eps |x| for sums of K <= 10^3 terms (eps = 2.2e-16),
    grown by at most a few orders through the layers: 1e-9 of each array's scale holds it,
    while one spike that flips (H within round-off of theta: improbable in float64) fails."""
    import cupy as cp
    rng = np.random.default_rng(0)
    (net_np, shape), (net_cp, _) = (build(name, method, neuron_kind, "float64") for _ in range(2))
    x = rng.normal(size=(5,) + shape)
    y = rng.integers(0, 3, 5)
    net_cp.to("cupy")
    results = []
    for net, xp in ((net_np, np), (net_cp, cp)):
        out = net.forward(dn.encode.direct(xp.asarray(x), net.T))
        loss, d = dn.losses.cross_entropy(out, xp.asarray(y))
        net.zero_grad()
        dx = net.backward(d, need_dx=True)
        r = {"out": out, "loss": loss, "dx": dx}
        r.update({"grad " + k: p.grad for k, p in net.named_parameters()})
        r.update({"buffer " + k: b for k, b in net.named_buffers()})
        net.eval()
        r["eval out"] = net.forward(dn.encode.direct(xp.asarray(x), net.T))
        results.append({k: backend.to_numpy(v) for k, v in r.items()})
    want, got = results
    for k in want:
        scale = float(np.abs(want[k]).max()) if want[k].size else 0.0
        np.testing.assert_allclose(got[k], want[k], rtol=1e-9, atol=1e-9 * scale, err_msg=k)


@needs_gpu
def test_cupy_arrays_get_the_gpu_kernels():
    import cupy as cp
    table = kernels.for_module(cp)
    if kernels.current() == "plain":
        assert table.lif_forward is neuron.lif_forward
    else:
        assert table.lif_forward is gpu_neuron.lif_forward
        assert table.conv2d_forward is gpu_conv.conv2d_forward
