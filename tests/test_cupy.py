"""CuPy on a real GPU against NumPy; every test here is skipped cleanly without one.

Without a GPU, tests/test_xp_strict.py runs the same code path on a CuPy stand-in. Here:
every model and method on CuPy against NumPy, and gpu.py's fused LIF kernels against the plain
neuron core on the same CuPy arrays. `python bench/gpu_check.py` runs this file first.
"""
import numpy as np
import pytest

import dsatgo_np as dn
from dsatgo_np import backend, kernels, neuron

pytestmark = pytest.mark.skipif(not backend.gpu_available(), reason="CuPy or a GPU is absent")


def build(name, method, neuron_kind, dtype):
    kw = dict(T=3, method=method, neuron=neuron_kind, seed=1, dtype=dtype)
    if name == "mlp":
        return dn.models.mlp([12, 10, 8, 3], **kw), (12,)
    if name == "cnn":
        return dn.models.cnn((1, 8, 8), (3, 4), 3, **kw), (1, 8, 8)
    if name == "vgg":
        return dn.models.vgg((2, 4, 4), (3, "P", 4), 3, hidden=(5,), pool="max", **kw), (2, 4, 4)
    net = dn.models.sew_resnet((2, 8, 8), 3, blocks=(1, 1), channels=(3, 5), head=6, **kw)
    return net, (2, 8, 8)


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


def lif_cases():
    for method in dn.METHODS:                                  # the rule measures H (or not)
        yield neuron.SpikeConfig(method=method), True
    yield neuron.SpikeConfig(method="ds-atgo"), False          # eval, running: one launch
    yield neuron.SpikeConfig(method="at", threshold="estimated"), True
    yield neuron.SpikeConfig(method="tgo", smooth=True, detach_reset=True), True
    yield neuron.SpikeConfig(method="ds-atgo", threshold_grad=True), True


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", range(len(list(lif_cases()))))
def test_gpu_lif_kernels_match_the_plain_core(case, dtype):
    """Compiled without fused multiply-adds, each kernel rounds as the plain core's separate
    CuPy operations: S, H, theta, k and dX equal bit for bit. dlam sums n T terms in another
    order (float64 per neuron, then over neurons): |difference| <= n T eps sum |terms|."""
    import cupy as cp
    from dsatgo_np import gpu
    cfg, training = list(lif_cases())[case]
    rng = np.random.default_rng(case)
    X = cp.asarray(rng.normal(0.5, 1.0, size=(4, 16, 33)).astype(dtype))
    dS = cp.asarray(rng.normal(size=X.shape).astype(dtype))
    running = cp.asarray(np.linspace(0.6, 1.2, 4).astype(dtype))
    lam, g = cp.asarray(0.3, dtype=dtype), cp.asarray(0.8, dtype=dtype)
    outs = []
    for forward, backward in ((neuron.lif_forward, neuron.lif_backward),
                              (gpu.lif_forward, gpu.lif_backward)):
        rule = neuron.make_rule(cfg, lam, training, running, g)
        S, c = forward(X, lam, rule, cfg.smooth, cfg.detach_reset, cfg.threshold_grad, cfg.f_c)
        dX, dlam = backward(dS, c, need_dlam=True)
        outs.append([cp.asnumpy(v) for v in (S, c.H, c.theta, c.k, dX, dlam)] + [c])
    (*want, c), (*got, _) = outs
    for name, w, v in zip(("S", "H", "theta", "k", "dX"), want[:5], got[:5]):
        np.testing.assert_array_equal(v, w, err_msg=name)
    terms = cp.asnumpy(cp.abs(c.V[:-1])).sum() * np.abs(want[4]).max()
    bound = X[0].size * X.shape[0] * np.finfo(dtype).eps * terms
    assert abs(float(got[5]) - float(want[5])) <= bound
    assert 0 < want[0].mean() < 1


def test_cupy_arrays_get_the_gpu_kernels():
    import cupy as cp
    from dsatgo_np import gpu
    table = kernels.for_module(cp)
    if kernels.current() == "plain":
        assert table.lif_forward is neuron.lif_forward
    else:
        assert table.lif_forward is gpu.lif_forward and table.lif_backward is gpu.lif_backward
