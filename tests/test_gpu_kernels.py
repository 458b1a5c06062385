"""dsatgo_np/gpu/ against the plain core: statistics, tdBN, convolution, the neuron, SGD, Adam.

Every test runs twice: on the CuPy stand-in with the kernel bodies compiled as C++ for the CPU
(tests/cuda_emulator.py; always), and on CuPy on a real GPU (skipped without one). Sums that
run in another order (float64 partial sums, cuBLAS or OpenBLAS blocks) are compared within a
bound that follows from their size: a sum of K terms of magnitude at most A is off by at most
about K eps A; everything element-wise is compared bit for bit.
"""
import shutil
from contextlib import nullcontext

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dsatgo_np as dn
from dsatgo_np import backend, conv, kernels, layers, neuron, threshold, update, xp_strict
from dsatgo_np.gpu import conv as gconv, layers as glayers, neuron as gneuron, stats

from strategies import FAST

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)


@pytest.fixture(scope="module", params=["emulator", "cupy"])
def gpu(request, tmp_path_factory):
    """(xp, context): the array module whose arrays get the GPU kernels, and what installs it."""
    if request.param == "cupy":
        if not backend.gpu_available():
            pytest.skip("CuPy or a GPU is absent")
        import cupy
        return cupy, nullcontext
    if shutil.which("g++") is None:
        pytest.skip("no g++ to compile the kernel bodies for the CPU")
    from cuda_emulator import Compiler
    compiler = Compiler(str(tmp_path_factory.mktemp("cuda_emulator")))
    return xp_strict, lambda: xp_strict.kernel_compiler(compiler)


def host(a):
    return backend.to_numpy(a)


# --- statistics -------------------------------------------------------------------------------

@FAST
@given(n=st.integers(2, 3000), loc=st.sampled_from([0.0, 0.7, -3.0, 1e4]),
       scale=st.sampled_from([1e-3, 0.5, 2.0]), seed=st.integers(0, 2**32 - 1))
def test_layer_stats_are_the_float64_mean_and_std(gpu, n, loc, scale, seed):
    """Within the float32 rounding of the result: the sums are float64, shifted by h[0], so
    even |mu| = 1e7 sigma loses nothing (float32's own std would lose everything there)."""
    xp, installed = gpu
    h = (loc + scale * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)
    with installed():
        mu, sigma = stats.layer_stats(xp.asarray(h))
    assert mu.shape == sigma.shape == () and mu.dtype == sigma.dtype == np.float32
    exact = h.astype(np.float64)
    want_mu, want_sigma = exact.mean(), exact.std(ddof=1)
    spread = np.abs(exact - exact[0]).max()
    bound = n * EPS64 * spread                               # float64 sums of n terms
    assert abs(float(host(mu)) - want_mu) <= EPS32 * abs(want_mu) + bound
    assert abs(float(host(sigma)) - want_sigma) <= EPS32 * want_sigma + bound + n * EPS64 * spread


def test_layer_stats_of_one_value_and_of_a_constant(gpu):
    xp, installed = gpu
    with installed():
        mu, sigma = stats.layer_stats(xp.asarray(np.array([2.5], np.float32)))
        assert float(host(mu)) == 2.5 and np.isnan(float(host(sigma)))     # ddof = 1: 0 / 0
        mu, sigma = stats.layer_stats(xp.full((7, 9), 3.25, dtype=np.float32))
        assert (float(host(mu)), float(host(sigma))) == (3.25, 0.0)


@pytest.mark.parametrize("shape", [(6, 4, 5, 3), (37, 5), (3, 2, 40, 2)])
def test_channel_moments_and_sums_are_float64_per_channel(gpu, shape):
    """Both layouts (channel fastest when a channel's block is short, else the values of a
    channel fastest): mean, biased var, inv_std, and the sums of a and a * b per channel."""
    xp, installed = gpu
    rng = np.random.default_rng(len(shape))
    x = rng.normal(0.4, 1.5, size=shape).astype(np.float32)
    y = rng.normal(size=shape).astype(np.float32)
    axes = (0,) + tuple(range(2, x.ndim))
    m = x.size // x.shape[1]
    with installed():
        mean, var, inv_std = stats.channel_moments(xp.asarray(x), 1e-5)
        sa, sb = stats.channel_sums(xp.asarray(x), xp.asarray(y))
    exact = x.astype(np.float64)
    bound = m * EPS64 * np.abs(exact).max() ** 2
    np.testing.assert_allclose(host(mean), exact.mean(axis=axes), rtol=EPS32, atol=bound)
    np.testing.assert_allclose(host(var), exact.var(axis=axes), rtol=2 * EPS32, atol=bound)
    np.testing.assert_array_equal(host(inv_std), (1 / np.sqrt(host(var) + np.float32(1e-5))))
    np.testing.assert_allclose(host(sa), exact.sum(axis=axes), rtol=EPS32, atol=bound)
    np.testing.assert_allclose(host(sb), (x * y).astype(np.float64).sum(axis=axes), rtol=EPS32,
                               atol=bound)


# --- tdBN and SGD -----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(6, 4, 5, 3), (40, 7)])
def test_batchnorm_matches_the_plain_core(gpu, shape):
    """Statistics within their float32 rounding; given them, every element-wise line equal."""
    xp, installed = gpu
    rng = np.random.default_rng(3)
    x, dout = (rng.normal(0.3, 2.0, size=shape).astype(np.float32) for _ in range(2))
    gamma, beta = (rng.normal(size=shape[1]).astype(np.float32) for _ in range(2))
    with installed():
        out, cache, mean, var = glayers.batchnorm_forward(*map(xp.asarray, (x, gamma, beta)))
        dx, grads = glayers.batchnorm_backward(xp.asarray(dout), cache)
    want_out, want_cache, want_mean, want_var = layers.batchnorm_forward(x, gamma, beta)
    m = x.size // shape[1]
    tol = m * EPS32 * np.abs(x).max()                      # the plain core's float32 sums
    np.testing.assert_allclose(host(mean), want_mean, atol=tol)
    np.testing.assert_allclose(host(var), want_var, atol=tol * np.abs(x).max())
    # with the GPU's own statistics, the plain normalisation gives the GPU's bits
    shape_c = (1, -1) + (1,) * (x.ndim - 2)
    xhat = (x - host(mean).reshape(shape_c)) * host(cache.inv_std).reshape(shape_c)
    np.testing.assert_array_equal(host(cache.xhat), xhat)
    np.testing.assert_array_equal(host(out), xhat * gamma.reshape(shape_c) + beta.reshape(shape_c))
    want_dx, want_grads = layers.batchnorm_backward(dout, want_cache._replace(
        xhat=host(cache.xhat), inv_std=host(cache.inv_std)))
    for k in ("weight", "bias"):
        np.testing.assert_allclose(host(grads[k]), want_grads[k],
                                   atol=m * EPS32 * np.abs(dout).max() * 4)
    scale = np.abs(want_dx).max()
    np.testing.assert_allclose(host(dx), want_dx, atol=4 * m * EPS32 * scale)


@pytest.mark.parametrize("shape", [(3, 6, 4, 5, 3), (3, 40, 7)])       # [T, B, C, ...]
def test_batchnorm_backward_over_t_copies_is_the_gpu_backward_of_the_folded_batch(gpu, shape):
    """A direct-encoded layer's BatchNorm backward: the GPU's own backward (its float64
    channel sums) over the T * B samples whose xhat is x[0]'s repeated T times, bit for bit;
    and so the plain core's static backward to the size of its float32 sums."""
    xp, installed = gpu
    rng = np.random.default_rng(5)
    T, C = shape[0], shape[2]
    x0 = rng.normal(0.3, 2.0, size=shape[1:]).astype(np.float32)
    dout = rng.normal(size=shape).astype(np.float32)
    gamma, beta = (rng.normal(size=C).astype(np.float32) for _ in range(2))
    with installed():
        _, cache, _, _ = glayers.batchnorm_forward(*map(xp.asarray, (x0, gamma, beta)))
        dx, grads = glayers.batchnorm_backward_static(xp.asarray(dout), cache)
        copies = cache._replace(xhat=xp.asarray(np.concatenate([host(cache.xhat)] * T)))
        want_dx, want_grads = glayers.batchnorm_backward(
            xp.asarray(dout.reshape((-1,) + shape[2:])), copies)
    assert dx.shape == shape
    np.testing.assert_array_equal(host(dx), host(want_dx).reshape(shape))
    for k in ("weight", "bias"):
        np.testing.assert_array_equal(host(grads[k]), host(want_grads[k]))
    plain_dx, _ = layers.batchnorm_backward_static(dout, cache._replace(
        **{f: host(getattr(cache, f)) for f in ("xhat", "gamma", "inv_std")}))
    m = dout.size // C
    np.testing.assert_allclose(host(dx), plain_dx, atol=4 * m * EPS32 * np.abs(plain_dx).max())


@pytest.mark.parametrize("momentum,weight_decay,nesterov", [(0.9, 0.0, False), (0.9, 1e-3, True),
                                                            (0.0, 1e-3, False)])
def test_sgd_and_running_averages_equal_the_plain_update_bit_for_bit(gpu, momentum, weight_decay,
                                                                     nesterov):
    xp, installed = gpu
    rng = np.random.default_rng(4)
    p, g, b = (rng.normal(size=(5, 7)).astype(np.float32) for _ in range(3))
    want_p, want_b = p.copy(), b.copy() if momentum else None
    update.sgd_update(want_p, g, want_b, 0.05, momentum, weight_decay, nesterov)
    got_p, got_b = xp.asarray(p), xp.asarray(b) if momentum else None
    r, v = (rng.normal(size=6).astype(np.float32) for _ in range(2))
    with installed():
        glayers.sgd_update(got_p, xp.asarray(g), got_b, 0.05, momentum, weight_decay, nesterov)
        running = [glayers.update_running(xp.asarray(r), xp.asarray(v), 0.1, f)
                   for f in (None, 1.25)]
    np.testing.assert_array_equal(host(got_p), want_p)
    if momentum:
        np.testing.assert_array_equal(host(got_b), want_b)
    for f, got in zip((None, 1.25), running):
        np.testing.assert_array_equal(host(got), threshold.update_running(r, v, 0.1, f))


# --- convolution ---------------------------------------------------------------------------------

@pytest.mark.parametrize("stride,padding,kernel,bias", [(1, 1, 3, True), (2, 0, 3, False),
                                                        (2, 1, 3, True), (1, 0, 1, False)])
@pytest.mark.parametrize("chunk_bytes", [1, 1 << 30])            # one image a chunk, or all
def test_conv2d_matches_the_plain_core(gpu, monkeypatch, stride, padding, kernel, bias,
                                       chunk_bytes):
    xp, installed = gpu
    monkeypatch.setattr(gconv, "CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(stride + 2 * padding)
    x = rng.normal(size=(3, 4, 9, 7)).astype(np.float32)
    w = rng.normal(size=(5, 4, kernel, kernel)).astype(np.float32)
    b = rng.normal(size=5).astype(np.float32) if bias else None
    want, want_cache = conv.conv2d_forward(x, w, b, stride, padding)
    dout = rng.normal(size=want.shape).astype(np.float32)
    want_dx, want_grads = conv.conv2d_backward(dout, want_cache)
    with installed():
        out, cache = gconv.conv2d_forward(xp.asarray(x), xp.asarray(w),
                                          None if b is None else xp.asarray(b), stride, padding)
        dx, grads = gconv.conv2d_backward(xp.asarray(dout), cache)
        none, _ = gconv.conv2d_backward(xp.asarray(dout), cache, need_dx=False)
    assert none is None and set(grads) == set(want_grads)
    K = 4 * kernel * kernel                                      # terms per output
    n_out = want.shape[0] * want.shape[2] * want.shape[3]        # terms per weight
    ax, aw, ad = (np.abs(a).max() for a in (x, w, dout))
    np.testing.assert_allclose(host(out), want, atol=2 * K * EPS32 * ax * aw)
    np.testing.assert_allclose(host(dx), want_dx, atol=2 * 5 * kernel * kernel * EPS32 * ad * aw)
    np.testing.assert_allclose(host(grads["weight"]), want_grads["weight"],
                               atol=2 * n_out * EPS32 * ad * ax)
    if bias:
        np.testing.assert_allclose(host(grads["bias"]), want_grads["bias"],
                                   atol=2 * n_out * EPS32 * ad)


# --- the neuron -------------------------------------------------------------------------------------

def lif_cases():
    for method in dn.METHODS:                                  # training: the rule measures H
        yield neuron.SpikeConfig(method=method), True
    for method in dn.METHODS:                                  # eval: running thresholds
        yield neuron.SpikeConfig(method=method), False
    yield neuron.SpikeConfig(method="ds-atgo", running=False), False
    yield neuron.SpikeConfig(method="at", threshold="estimated"), True
    yield neuron.SpikeConfig(method="tgo", smooth=True, detach_reset=True), True
    yield neuron.SpikeConfig(method="ds-atgo", width="std", detach_reset=True), True
    yield neuron.SpikeConfig(method="ds-atgo", f_c=1.3, k0=0.7), True
    yield neuron.SpikeConfig(method="ds-atgo", threshold_grad=True), True


CASES = list(lif_cases())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_lif_kernels_match_the_plain_core(gpu, case, dtype):
    """mu, sigma within the rounding of their sums; theta, k the rule of those statistics
    (k within the math library's tanh, an ulp or two); given theta and k, the plain core's
    S, H and dX bit for bit, and dlam within n T eps of its terms."""
    xp, installed = gpu
    cfg, training = CASES[case]
    rng = np.random.default_rng(case)
    X = rng.normal(0.5, 1.0, size=(5, 16, 33)).astype(dtype)
    X = np.broadcast_to(X[:1], X.shape) if case % 3 == 0 else X     # direct-encoded: stride 0
    dS = rng.normal(size=X.shape).astype(dtype)
    running = np.linspace(0.6, 1.2, 5).astype(dtype)
    lam, g = np.asarray(0.3, dtype), np.asarray(0.8, dtype)
    rule = neuron.make_rule(cfg, xp.asarray(lam), training, xp.asarray(running), xp.asarray(g))
    through = cfg.threshold_grad and rule.theta_depends_on_h
    with installed():
        S, c = gneuron.lif_forward(xp.asarray(X), xp.asarray(lam), rule, cfg.smooth,
                                   cfg.detach_reset, through, cfg.f_c)
        dX, dlam = gneuron.lif_backward(xp.asarray(dS), c, need_dlam=True)
        dX_fixed, none = gneuron.lif_backward(xp.asarray(dS), c, need_dlam=False)
    assert none is None
    got = {k: host(v) for k, v in c._asdict().items() if hasattr(v, "shape")}
    plain_rule = neuron.make_rule(cfg, lam, training, running, g)
    want_S, want = neuron.lif_forward(X, lam, plain_rule, cfg.smooth, cfg.detach_reset, through,
                                      cfg.f_c)
    eps = np.finfo(dtype).eps
    if plain_rule.measures:
        n = X[0].size
        bound = eps * np.abs(X).max() * (n * eps + 2)
        np.testing.assert_allclose(got["mu"], want.mu, atol=bound + n * eps * np.abs(X).max())
        np.testing.assert_allclose(got["sigma"], want.sigma, atol=4 * n * eps * np.abs(X).max())
        for t in range(X.shape[0]):                            # the rule of these statistics
            step = plain_rule(None, t, (got["mu"][t], got["sigma"][t]))
            np.testing.assert_array_equal(got["theta"][t], step.theta)
            np.testing.assert_allclose(got["k"][t], step.k, rtol=4 * eps, atol=0)
    else:
        for name in ("theta", "k", "mu", "sigma"):
            np.testing.assert_array_equal(got[name], getattr(want, name), err_msg=name)
    replay = neuron.replay_rule(got["theta"], got["k"])        # the plain core, these thresholds
    S2, c2 = neuron.lif_forward(X, lam, replay, cfg.smooth, cfg.detach_reset, False, cfg.f_c)
    np.testing.assert_array_equal(host(S), S2)
    np.testing.assert_array_equal(got["H"], c2.H)
    c2 = c2._replace(mu=got["mu"], sigma=got["sigma"], threshold_grad=through)
    want_dX, want_dlam = neuron.lif_backward(dS, c2, need_dlam=True)
    if through and xp is not xp_strict:
        # the plain backward on CuPy: dtheta[t] sums n terms in CuPy's order, not NumPy's
        tol = X[0].size * eps * np.abs(want_dX).max()
        np.testing.assert_allclose(host(dX), want_dX, rtol=0, atol=tol)
        np.testing.assert_allclose(host(dX_fixed), want_dX, rtol=0, atol=tol)
    else:
        np.testing.assert_array_equal(host(dX), want_dX)
        np.testing.assert_array_equal(host(dX_fixed), want_dX)
    terms = np.abs(c2.V[:-1]).sum() * np.abs(want_dX).max()
    assert abs(float(host(dlam)) - float(want_dlam)) <= X[0].size * X.shape[0] * eps * terms
    assert 0 < S2.mean() < 1                                   # some fire, not all


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_adam_equals_the_plain_update_bit_for_bit_in_one_launch(gpu, dtype, weight_decay):
    """Five steps (the bias corrections change each step), the parameter and both moments
    equal to the plain update's bits; each step one launch per parameter, nothing read back,
    where the plain update makes 14 array operations (16 with weight decay)."""
    xp, installed = gpu
    rng = np.random.default_rng(6)
    p = rng.normal(size=(6, 5)).astype(dtype)
    want = [p.copy(), np.zeros_like(p), np.zeros_like(p)]            # p, m, v
    got = [xp.asarray(p), xp.zeros(p.shape, dtype=dtype), xp.zeros(p.shape, dtype=dtype)]
    options = (0.01, 0.9, 0.999, 1e-8, weight_decay)
    with installed():
        for step in range(1, 6):
            g = rng.normal(size=p.shape).astype(dtype)
            update.adam_update(want[0], g, want[1], want[2], *options, step)
            g_device = xp.asarray(g)
            with xp_strict.count_transfers() if xp is xp_strict else nullcontext() as counted:
                glayers.adam_update(got[0], g_device, got[1], got[2], *options, step)
            if xp is xp_strict:
                assert (counted.operations, counted.count) == (1, 0)
                plain = [xp.asarray(a) for a in want]
                with xp_strict.count_transfers() as counted:
                    update.adam_update(*plain[:1], g_device, *plain[1:], *options, step)
                assert counted.operations == (16 if weight_decay else 14)
    assert not np.array_equal(want[0], p)                              # it moved
    for w, a in zip(want, got):
        np.testing.assert_array_equal(host(a), w)
        assert host(a).dtype == dtype


@pytest.mark.parametrize("make, buffers", [
    (lambda ps: dn.optim.SGD(ps, lr=0.1, momentum=0.9), 1),     # momentum buffer
    (lambda ps: dn.optim.Adam(ps, lr=0.01), 2),                  # m and v
])
def test_the_optimisers_take_the_gpu_update_for_device_arrays(gpu, monkeypatch, make, buffers):
    """optim.SGD and optim.Adam on device arrays: one launch per parameter and step, after
    the first step's zeroed buffers, which live on the device too (counted on the stand-in;
    the default kernel tables, also under DSATGO_KERNELS=plain)."""
    from dsatgo_np.module import Parameter
    xp, installed = gpu
    if xp is not xp_strict:
        pytest.skip("counted on the stand-in")
    monkeypatch.setattr(kernels, "_choice", "fast")
    rng = np.random.default_rng(8)
    params = [Parameter(xp.asarray(rng.normal(size=s).astype(np.float32)))
              for s in ((4, 3), (5,), (2, 2, 3))]
    launches = []
    with installed():
        opt = make(params)
        for _ in range(3):
            for p in params:
                p.grad = xp.asarray(rng.normal(size=p.data.shape).astype(np.float32))
            with xp_strict.count_transfers() as counted:
                opt.step()
            launches.append((counted.operations, counted.count))
    n = len(params)
    assert launches == [((1 + buffers) * n, 0), (n, 0), (n, 0)]
    state = [a for k, a in opt.state_dict().items() if k != "t"]
    assert len(state) == buffers * n and all(isinstance(a, xp_strict.ndarray) for a in state)


def test_a_measuring_neuron_launches_two_kernels_a_step(gpu):
    """The statistics, rule, fire, reset and charge of a step: two launches, and one for the
    last step's rule and spikes (counted on the stand-in)."""
    xp, installed = gpu
    if xp is not xp_strict:
        pytest.skip("counted on the stand-in")
    T = 4
    X = xp.asarray(np.random.default_rng(0).normal(size=(T, 8, 50)).astype(np.float32))
    lam = xp.asarray(np.asarray(0.2, np.float32))
    counts = {}
    with installed():
        for method in ("ds-atgo", "vanilla"):
            rule = neuron.make_rule(neuron.SpikeConfig(method=method), lam, True)
            with xp_strict.count_transfers() as counted:
                gneuron.lif_forward(X, lam, rule)
            counts[method] = (counted.operations, counted.count)
    assert counts["ds-atgo"] == (2 * T + 1, 0)                 # and nothing read back
    assert counts["vanilla"] == (4, 0)                         # theta, k, NaN stats, one kernel


# --- the same experiment on any device ----------------------------------------------------------

def test_a_training_run_on_the_gpu_kernels_is_the_cpu_run(gpu, tmp_path):
    """The training command on the stand-in with the GPU kernels and on NumPy, from one seed:
    the same batches, crops and flips (drawn on the host; the stand-in's device generator
    draws other numbers, as CuPy's does), the same initial weights, so the batch losses agree
    to float32 rounding. A spike that flips would move a loss by about 1 / (B N) = 1e-4."""
    import json

    from dsatgo_np import train
    xp, installed = gpu
    if xp is not xp_strict:
        pytest.skip("on a GPU, bench/gpu_check.py compares the first steps of cifar-long")
    losses = {}
    for name in ("numpy", "strict"):
        cfg = train.Config(dataset="digits", model="cnn", channels=[8, 16], T=3, epochs=1,
                           batch_size=50, augment=True, train_subset=600, lr=0.2, backend=name,
                           out=str(tmp_path / name), plots=False)
        with installed() if name == "strict" else nullcontext():
            train.fit(cfg, verbose=False, progress=False)
        with open(tmp_path / name / "metrics.jsonl") as f:
            losses[name] = np.array(json.loads(f.readline())["batches"]["loss"])
    assert len(losses["numpy"]) == 12 and np.ptp(losses["numpy"]) > 1e-2    # it moved
    np.testing.assert_allclose(losses["strict"], losses["numpy"], rtol=8 * EPS32, atol=0)
