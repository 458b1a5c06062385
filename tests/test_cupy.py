"""CuPy on a real GPU against NumPy; those tests are skipped cleanly without one.

Without a GPU, tests/test_xp_strict.py runs the same code path on a CuPy stand-in, and the
kernel bodies of gpu.py run here as C++ on the CPU (tests/cuda_emulator.py). On a GPU: every
model and method on CuPy against NumPy, and gpu.py's fused LIF kernels against the plain neuron
core on the same CuPy arrays. `python bench/gpu_check.py` runs this file first.
"""
import shutil

import numpy as np
import pytest

import dsatgo_np as dn
from dsatgo_np import backend, gpu, kernels, neuron
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


def lif_cases():
    for method in dn.METHODS:                                  # the rule measures H (or not)
        yield neuron.SpikeConfig(method=method), True
    for method in dn.METHODS:                                  # eval: one launch for most
        yield neuron.SpikeConfig(method=method), False
    yield neuron.SpikeConfig(method="ds-atgo", running=False), False
    yield neuron.SpikeConfig(method="at", threshold="estimated"), True
    yield neuron.SpikeConfig(method="tgo", smooth=True, detach_reset=True), True
    yield neuron.SpikeConfig(method="vanilla", smooth=True), True
    yield neuron.SpikeConfig(method="ds-atgo", width="std", detach_reset=True), True
    yield neuron.SpikeConfig(method="ds-atgo", threshold_grad=True), True


CASES = list(lif_cases())


def check_lif_kernels(xp, case, dtype):
    """gpu.lif_forward / lif_backward against the plain core, both on xp's arrays.

    Compiled without fused multiply-adds, each kernel rounds as the plain core's separate
    operations: S, H, theta, k, mu, sigma and dX equal bit for bit. dlam sums n T terms in
    another order (float64 per neuron, then over neurons): |difference| <= n T eps sum |terms|.
    """
    cfg, training = CASES[case]
    rng = np.random.default_rng(case)
    X = rng.normal(0.5, 1.0, size=(5, 16, 33)).astype(dtype)
    # every third case direct-encoded: the same X[0] at every step (time stride 0)
    X = xp.broadcast_to(xp.asarray(X[:1]), X.shape) if case % 3 == 0 else xp.asarray(X)
    dS = xp.asarray(rng.normal(size=X.shape).astype(dtype))
    running = xp.asarray(np.linspace(0.6, 1.2, 5).astype(dtype))
    lam, g = xp.asarray(np.asarray(0.3, dtype)), xp.asarray(np.asarray(0.8, dtype))
    outs = []
    for forward, backward in ((neuron.lif_forward, neuron.lif_backward),
                              (gpu.lif_forward, gpu.lif_backward)):
        rule = neuron.make_rule(cfg, lam, training, running, g)
        S, c = forward(X, lam, rule, cfg.smooth, cfg.detach_reset,
                       cfg.threshold_grad and rule.theta_depends_on_h, cfg.f_c)
        dX, dlam = backward(dS, c, need_dlam=True)
        dX_fixed, none = backward(dS, c, need_dlam=False)
        assert none is None
        outs.append([backend.to_numpy(v) for v in (S, c.H, c.theta, c.k, c.mu, c.sigma, dX,
                                                   dX_fixed, dlam, c.V)])
    want, got = outs
    for i, name in enumerate(("S", "H", "theta", "k", "mu", "sigma", "dX", "dX fixed lam")):
        np.testing.assert_array_equal(got[i], want[i], err_msg=name)
    terms = np.abs(want[9][:-1]).sum() * np.abs(want[6]).max()
    bound = X[0].size * X.shape[0] * np.finfo(dtype).eps * terms
    assert abs(float(got[8]) - float(want[8])) <= bound
    assert 0 < want[0].mean() < 1                              # some fire, not all


@needs_gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_gpu_lif_kernels_match_the_plain_core(case, dtype):
    import cupy as cp
    check_lif_kernels(cp, case, dtype)


@pytest.fixture(scope="module")
def cpu_cuda(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("no g++ to compile the kernel bodies for the CPU")
    from cuda_emulator import numpy_as_cupy
    return numpy_as_cupy(str(tmp_path_factory.mktemp("cuda_emulator")))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_gpu_kernel_bodies_run_on_the_cpu_match_the_plain_core(case, dtype, cpu_cuda,
                                                                monkeypatch):
    """The same check with the CUDA bodies compiled as C++: their logic (indices, the
    recurrence, dlam) is tested on every machine, the GPU test adds NVRTC and the launch."""
    monkeypatch.setattr(gpu, "_kernels", {})
    monkeypatch.setattr(gpu, "_cupy_of", lambda a: cpu_cuda)
    check_lif_kernels(np, case, dtype)


@needs_gpu
def test_cupy_arrays_get_the_gpu_kernels():
    import cupy as cp
    table = kernels.for_module(cp)
    if kernels.current() == "plain":
        assert table.lif_forward is neuron.lif_forward
    else:
        assert table.lif_forward is gpu.lif_forward and table.lif_backward is gpu.lif_backward
