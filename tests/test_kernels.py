"""Every fast kernel (dsatgo_np/fast/) against the plain core it stands for.

The fast LIF loops do the plain loop's arithmetic operation for operation, so given the same
layer statistics, spikes, potentials and gradients agree bit for bit; dlam is summed in another
order, and the fast BatchNorm works from per-channel sums, so those agree to round-off
(tolerances below: a few eps times the number of terms in the sum). Block sizes are shrunk in
some tests so that the block boundaries fall inside every step. With threshold_grad the fast
backward hands over to the plain loop (the sum over all neurons of step t must finish before
step t - 1 starts), so there is nothing of its own to compare there: the finite-difference
tests cover that path.
"""
import contextlib
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsatgo_np import kernels
from dsatgo_np import layers as plain_layers
from dsatgo_np.fast import layers as fast_layers
from dsatgo_np.fast import neuron as fast_neuron
from dsatgo_np.fast.neuron import fast_layer_stats, lif_backward, lif_forward
from dsatgo_np.core.neuron import METHODS, SpikeConfig, make_rule
from dsatgo_np.core.neuron import lif_backward as plain_lif_backward
from dsatgo_np.core.neuron import lif_forward as plain_lif_forward
from dsatgo_np.core.threshold import layer_stats

FAST = settings(max_examples=20, deadline=None)


@contextlib.contextmanager
def lif_block(size):
    """Run the fast LIF loops with blocks of `size` neurons."""
    saved, fast_neuron.BLOCK = fast_neuron.BLOCK, size
    try:
        yield
    finally:
        fast_neuron.BLOCK = saved


def same_stats_rule(cfg, lam):
    """cfg's rule, with the layer statistics of fast_layer_stats for both kernels: the plain
    rule would take np.mean / np.std, whose float32 bits differ (a theta one ulp apart may
    flip a spike). test_fast_layer_stats_matches_numpy bounds that difference."""
    rule = make_rule(cfg, lam, True, g=np.asarray(1.2, dtype=lam.dtype))

    def same(h, t, stats=None):
        return rule(h, t, fast_layer_stats(h) if stats is None and rule.measures else stats)

    same.measures = rule.measures
    return same


def lif_pair(X, cfg, lam, **kw):
    rule = same_stats_rule(cfg, lam)
    return plain_lif_forward(X, lam, rule, **kw), lif_forward(X, lam, rule, **kw)


@FAST
@given(seed=st.integers(0, 2**31 - 1), T=st.integers(1, 4), B=st.integers(1, 5),
       N=st.integers(2, 40), method=st.sampled_from(METHODS), detach_reset=st.booleans(),
       block=st.sampled_from([7, 64, 1 << 16]), dtype=st.sampled_from(["float32", "float64"]))
def test_lif_fast_equals_reference_bit_for_bit(seed, T, B, N, method, detach_reset, block, dtype):
    with lif_block(block):
        check_lif_parity(seed, T, B, N, method, detach_reset, dtype)


def check_lif_parity(seed, T, B, N, method, detach_reset, dtype):
    rng = np.random.default_rng(seed)
    X = rng.normal(0.5, 1.0, (T, B, N)).astype(dtype)
    lam = np.asarray(0.3, dtype=dtype)
    (S1, c1), (S2, c2) = lif_pair(X, SpikeConfig(method=method), lam, detach_reset=detach_reset)
    for a, b in [(S1, S2), (c1.H, c2.H), (c1.V, c2.V), (c1.theta, c2.theta), (c1.k, c2.k)]:
        np.testing.assert_array_equal(a, b)
    dS = rng.normal(size=X.shape).astype(dtype)
    (dX1, dl1), (dX2, dl2) = plain_lif_backward(dS, c1), lif_backward(dS, c1)
    np.testing.assert_array_equal(dX1, dX2)
    # dlam: T * B * N products summed in another order, each |dh * V| of order 10
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(dl2, dl1, rtol=0, atol=20 * eps * X.size * 10)
    assert dX2.dtype == dS.dtype and dl2.dtype == dS.dtype
    dX3, none = lif_backward(dS, c1, need_dlam=False)
    assert none is None and plain_lif_backward(dS, c1, need_dlam=False)[1] is None
    np.testing.assert_array_equal(dX3, dX1)


def test_lif_fast_smooth_mode(monkeypatch):
    monkeypatch.setattr(fast_neuron, "BLOCK", 13)
    rng = np.random.default_rng(3)
    X = rng.normal(0.4, 1.0, (3, 4, 11))
    lam = np.asarray(0.25)
    cfg = SpikeConfig(method="at", smooth=True, k0=2.0)
    (S1, c1), (S2, c2) = lif_pair(X, cfg, lam, smooth=True)
    np.testing.assert_array_equal(S2, S1)
    assert 0 < ((S1 > 0) & (S1 < 1)).mean() < 1           # smooth values, not only 0 and 1
    dS = rng.normal(size=X.shape)
    (dX1, dl1), (dX2, dl2) = plain_lif_backward(dS, c1), lif_backward(dS, c2)
    np.testing.assert_array_equal(dX2, dX1)
    np.testing.assert_allclose(dl2, dl1, rtol=0, atol=20 * np.finfo(float).eps * X.size * 10)


def test_lif_fast_on_image_shapes_and_a_static_input():
    """[T, B, C, H, W], and a direct-encoded input (time stride 0) that reshape must copy."""
    rng = np.random.default_rng(4)
    x = rng.normal(0.8, 1.0, (3, 2, 5, 4)).astype(np.float32)
    X = np.broadcast_to(x[None], (4,) + x.shape)
    lam = np.asarray(0.2, dtype=np.float32)
    (S1, c1), (S2, c2) = lif_pair(X, SpikeConfig(method="ds-atgo"), lam)
    np.testing.assert_array_equal(S1, S2)
    dS = rng.normal(size=X.shape).astype(np.float32)
    np.testing.assert_array_equal(lif_backward(dS, c2)[0], plain_lif_backward(dS, c1)[0])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("block,M", [(2048, 5 * 1024 + 300), (2048, 2048), (1 << 16, 3000)])
def test_lif_statistics_taken_while_charging(method, block, M, monkeypatch):
    """Blocks of whole rows: the fast forward takes H[t]'s statistics from row sums in its own
    pass (never calling fast_layer_stats) and gets fast_layer_stats's bits; M > threshold.ROW
    so that there are whole rows, several blocks and a partial last row."""
    rng = np.random.default_rng(7)
    X = rng.normal(0.6, 1.3, (3, 2, M // 2 + 1)).astype(np.float32)
    lam = np.asarray(0.3, dtype=np.float32)
    rule = same_stats_rule(SpikeConfig(method=method), lam)
    S1, c1 = plain_lif_forward(X, lam, rule)

    def no_second_read(h):
        raise AssertionError("lif_forward read H[t] again for its statistics")

    monkeypatch.setattr(fast_neuron, "fast_layer_stats", no_second_read)
    with lif_block(block):
        S2, c2 = lif_forward(X, lam, rule)
    for a, b in [(S1, S2), (c1.H, c2.H), (c1.theta, c2.theta), (c1.k, c2.k), (c1.mu, c2.mu),
                 (c1.sigma, c2.sigma)]:
        np.testing.assert_array_equal(a, b)
    assert np.isnan(c2.mu).all() == (not rule.measures)


@pytest.mark.parametrize("method", ["at", "ds-atgo"])
def test_the_method_rule_uses_the_statistics_the_fast_loop_hands_it(method, monkeypatch):
    """make_rule's measured threshold takes mu and sigma from the row sums that the fast LIF
    loop passes in, and never reads H[t] again for them; its thresholds match the plain
    kernel's, whose statistics come from layer_stats, to float32 round-off of N-term sums."""
    from dsatgo_np import neuron as plain_neuron
    rng = np.random.default_rng(8)
    X = rng.normal(0.6, 1.3, (3, 2, 5 * 1024 + 300)).astype(np.float32)
    lam = np.asarray(0.3, dtype=np.float32)
    _, c1 = plain_lif_forward(X, lam, make_rule(SpikeConfig(method=method), lam, training=True))

    def no_second_read(h):
        raise AssertionError("make_rule read H[t] again for its statistics")
    monkeypatch.setattr(plain_neuron, "layer_stats", no_second_read)
    with lif_block(2048):
        _, c2 = lif_forward(X, lam, make_rule(SpikeConfig(method=method), lam, training=True))
    n = X[0].size                                         # terms in each step's sums
    np.testing.assert_allclose(c2.theta, c1.theta, rtol=0,
                               atol=n * np.finfo(np.float32).eps * np.abs(c1.theta).max())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(2,), (3, 5), (4, 3, 7, 9), (2, 1000, 3)])
def test_fast_layer_stats_matches_numpy(dtype, shape):
    h = np.random.default_rng(5).normal(0.7, 1.9, shape).astype(dtype)
    mu, sigma = fast_layer_stats(h)
    rtol = 1e-6 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(mu, h.astype(np.float64).mean(), rtol=rtol)
    np.testing.assert_allclose(sigma, h.astype(np.float64).std(ddof=1), rtol=rtol)
    assert mu.dtype == h.dtype and sigma.dtype == h.dtype


def test_fast_layer_stats_falls_back_when_the_mean_dwarfs_the_spread():
    """float32 values 1e4 +- 0.01: sum h^2 - n mu^2 would cancel to noise; np.std is used."""
    h = (1e4 + 0.01 * np.random.default_rng(6).standard_normal(5000)).astype(np.float32)
    mu, sigma = fast_layer_stats(h)
    ref_mu, ref_sigma = layer_stats(h)
    assert mu == ref_mu and sigma == ref_sigma
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # n = 1: ddof = 1 leaves NaN, as np.std
        one = fast_layer_stats(np.ones(1, np.float32))
        assert np.isnan(one[1]) and np.isnan(layer_stats(np.ones(1, np.float32))[1])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(7, 3), (64, 5), (5, 4, 3), (6, 3, 5, 7), (9, 2, 28, 28)])
@pytest.mark.parametrize("block_bytes", [1, 1 << 19])
def test_batchnorm_fast_matches_plain(dtype, shape, block_bytes, monkeypatch):
    monkeypatch.setattr(fast_layers, "BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(7)
    C = shape[1]
    x = rng.normal(1.5, 2.0, shape).astype(dtype)
    gamma, beta = rng.normal(1, 0.3, C).astype(dtype), rng.normal(size=C).astype(dtype)
    o1, c1, m1, v1 = plain_layers.batchnorm_forward(x, gamma, beta)
    o2, c2, m2, v2 = fast_layers.batchnorm_forward(x, gamma, beta)
    rtol, atol = (2e-5, 2e-5) if dtype == "float32" else (1e-11, 1e-12)
    for a, b in [(o1, o2), (m1, m2), (v1, v2)]:
        np.testing.assert_allclose(b, a, rtol=rtol, atol=atol)
        assert b.dtype == a.dtype and b.shape == a.shape
    dout = rng.normal(size=shape).astype(dtype)
    (dx1, g1), (dx2, g2) = (plain_layers.batchnorm_backward(dout, c1),
                            fast_layers.batchnorm_backward(dout, c2))
    np.testing.assert_allclose(dx2, dx1, rtol=rtol, atol=atol * 10)
    for k in ("weight", "bias"):
        np.testing.assert_allclose(g2[k], g1[k], rtol=rtol, atol=atol * 100)
        assert g2[k].dtype == g1[k].dtype


@pytest.mark.parametrize("mean, spread", [(1e3, 0.1), (1e4, 3.0)])
def test_batchnorm_fast_keeps_precision_when_the_mean_dwarfs_the_spread(mean, spread):
    """A channel whose mean dwarfs its spread, in float32: the one-pass variance
    E[x^2] - E[x]^2 cancels (to a negative number at 1e3 +- 0.1; at 1e4 +- 3 to a variance
    3 % off 9, which is far above 1e-3: the switch to two passes must compare the variance
    with the squared mean, not with a fixed number); two passes run."""
    rng = np.random.default_rng(8)
    x = rng.normal(0, 1, (32, 2, 6, 6)).astype(np.float32)
    x[:, 1] = mean + spread * x[:, 1]
    g, b = np.ones(2, np.float32), np.zeros(2, np.float32)
    _, _, _, v = fast_layers.batchnorm_forward(x, g, b)
    ref = x.astype(np.float64).transpose(1, 0, 2, 3).reshape(2, -1).var(axis=1)
    np.testing.assert_allclose(v, ref, rtol=1e-3)


def test_batchnorm_fast_does_not_mutate_its_inputs():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(4, 3, 5)).astype(np.float32)
    g, b = np.ones(3, np.float32), np.zeros(3, np.float32)
    keep = x.copy()
    out, cache, _, _ = fast_layers.batchnorm_forward(x, g, b)
    dout = rng.normal(size=x.shape).astype(np.float32)
    dkeep = dout.copy()
    fast_layers.batchnorm_backward(dout, cache)
    np.testing.assert_array_equal(x, keep)
    np.testing.assert_array_equal(dout, dkeep)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(4, 6, 5), (3, 5, 4, 6, 6),
                                   (2, 40, 2)])           # more samples than bytes in a row
def test_batchnorm_static_fast_matches_plain(dtype, shape):
    """A direct-encoded layer: forward on x[0] alone, backward for T copies."""
    rng = np.random.default_rng(10)
    C = shape[2]
    x0 = rng.normal(0.5, 2.0, shape[1:]).astype(dtype)
    gamma, beta = rng.normal(1, 0.3, C).astype(dtype), rng.normal(size=C).astype(dtype)
    dout = rng.normal(size=shape).astype(dtype)
    (_, c1, _, _), (_, c2, _, _) = (plain_layers.batchnorm_forward(x0, gamma, beta),
                                    fast_layers.batchnorm_forward(x0, gamma, beta))
    (dx1, g1), (dx2, g2) = (plain_layers.batchnorm_backward_static(dout, c1),
                            fast_layers.batchnorm_backward_static(dout, c2))
    # and both equal the ordinary backward over the T copies, folded into the batch
    x = np.broadcast_to(x0, shape).reshape((-1,) + shape[2:])
    _, c3, _, _ = plain_layers.batchnorm_forward(x, gamma, beta)
    dx3, g3 = plain_layers.batchnorm_backward(dout.reshape(x.shape), c3)
    m = dout.size // C                                    # terms in each channel's sum
    tol = 50 * np.finfo(dtype).eps * m
    for dx in (dx1, dx2):
        np.testing.assert_allclose(dx, dx3.reshape(shape), rtol=0, atol=tol)
    for g in (g1, g2):
        for k in ("weight", "bias"):
            np.testing.assert_allclose(g[k], g3[k], rtol=0, atol=tol * 4)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batchnorm_eval_and_linear_fast_match_plain(dtype):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(6, 4, 3, 3)).astype(dtype)
    stats = [rng.normal(1, 0.2, 4).astype(dtype), rng.normal(size=4).astype(dtype),
             rng.normal(size=4).astype(dtype), rng.uniform(0.5, 2, 4).astype(dtype)]
    tol = 8 * np.finfo(dtype).eps * 10
    np.testing.assert_allclose(fast_layers.batchnorm_eval(x, *stats),
                               plain_layers.batchnorm_eval(x, *stats), rtol=tol, atol=tol)
    a, w, b = (rng.normal(size=s).astype(dtype) for s in [(7, 5), (3, 5), (3,)])
    (o1, c1), (o2, c2) = plain_layers.linear_forward(a, w, b), fast_layers.linear_forward(a, w, b)
    np.testing.assert_allclose(o2, o1, rtol=0, atol=8 * np.finfo(dtype).eps * 5 * 4)
    d = rng.normal(size=o1.shape).astype(dtype)
    (dx1, g1), (dx2, g2) = plain_layers.linear_backward(d, c1), fast_layers.linear_backward(d, c2)
    np.testing.assert_allclose(dx2, dx1, rtol=0, atol=8 * np.finfo(dtype).eps * 3 * 4)
    for k in ("weight", "bias"):
        np.testing.assert_allclose(g2[k], g1[k], rtol=0, atol=8 * np.finfo(dtype).eps * 7 * 4)


def test_every_table_holds_every_kernel_the_model_calls():
    """kernels.NAMES lists what the shell's layers call through a table (every name it uses is there);
    the fast table takes each from dsatgo_np/fast/, the plain one none."""
    import re

    from dsatgo_np import containers, model, spiking
    called = set()
    for shell in (model, spiking, containers):
        called |= set(re.findall(r"(?:K|self\.kernels)\.(\w+)\(", open(shell.__file__).read()))
    assert {"lif_forward", "conv2d_backward", "maxpool2d_forward"} <= called
    assert called <= set(kernels.NAMES), called - set(kernels.NAMES)
    fast = kernels._fast()
    for name in kernels.NAMES:
        if name in kernels.PLAIN_ON_CPU:             # no CPU version of its own: the plain one
            assert getattr(fast, name) is getattr(kernels.PLAIN, name), name
            continue
        assert getattr(fast, name).__module__.startswith("dsatgo_np.fast."), name
        assert not getattr(kernels.PLAIN, name).__module__.startswith("dsatgo_np.fast"), name


def test_cupy_arrays_get_the_gpu_kernels_and_the_plain_core_for_the_rest(monkeypatch):
    """CuPy's table takes the neuron, the statistics, tdBN, conv2d, running averages, SGD and
    Adam from dsatgo_np/gpu/ (which imports without CuPy), every other kernel from the plain core;
    DSATGO_KERNELS=plain gives CuPy the plain core alone."""
    import types

    cupy = types.ModuleType("cupy")
    saved = kernels.current()
    on_gpu = {"lif_forward", "lif_backward", "layer_stats", "batchnorm_forward",
              "batchnorm_backward", "batchnorm_backward_static", "conv2d_forward",
              "conv2d_backward", "update_running", "sgd_update", "adam_update"}
    try:
        monkeypatch.delenv("DSATGO_KERNELS", raising=False)
        kernels.set_kernels("auto")
        table = kernels.for_module(cupy)
        assert table.name == "gpu"
        for name in kernels.NAMES:
            module = getattr(table, name).__module__
            if name in on_gpu:
                assert module.startswith("dsatgo_np.gpu."), name
            else:
                assert getattr(table, name) is getattr(kernels.PLAIN, name), name
        kernels.set_kernels("plain")
        assert kernels.for_module(cupy) is kernels.PLAIN
    finally:
        kernels._choice = saved


def test_the_kernel_table_follows_the_array_module_and_the_forced_choice(monkeypatch):
    assert kernels.for_module(np).name == ("plain" if kernels.current() == "plain" else "fast")
    saved = kernels.current()
    try:
        kernels.set_kernels("plain")
        assert kernels.of(np.zeros(2)).lif_forward is plain_lif_forward
        kernels.set_kernels("fast")
        assert kernels.of(np.zeros(2)).lif_forward is lif_forward
        with pytest.raises(ValueError, match="unknown kernel set"):
            kernels.set_kernels("quick")
        monkeypatch.setenv("DSATGO_KERNELS", "plain")
        kernels.set_kernels("auto")
        assert kernels.current() == "plain"
        monkeypatch.setenv("DSATGO_KERNELS", " ")            # set but blank: the default
        kernels.set_kernels("auto")
        assert kernels.current() == "auto"
        monkeypatch.setenv("DSATGO_KERNELS", "turbo")
        with pytest.raises(ValueError, match=r"^DSATGO_KERNELS='turbo': choose one of auto, "
                                             r"plain, fast$"):
            kernels.set_kernels("auto")
    finally:
        kernels._choice = saved


# ---------------------------------------------------------------------------- float32 throughout

F64 = np.dtype(np.float64)


def test_the_fast_lif_loops_make_float32_arrays_for_float32_data(arrays_made):
    """A float32 network keeps float32 through the neuron (half the memory and traffic of
    float64): H, S, the row sums of the statistics, every per-block scratch buffer and the
    results. The one float64 array is dlam's per-block, per-step accumulator (blocks, T),
    float64 on purpose (the comment in lif_backward). The decay may come as a number (the
    contract of lif_forward); it too is taken in float32. A float64 scratch buffer would not
    show in the values: they are cast back on their way out."""
    rng = np.random.default_rng(11)
    T = 3
    X = rng.normal(0.6, 1.3, (T, 2, 1100)).astype(np.float32)      # 2200 neurons: 2 whole rows
    lam = np.asarray(0.3, dtype=np.float32)
    rule = same_stats_rule(SpikeConfig(method="ds-atgo"), lam)
    made = arrays_made(fast_neuron)
    S, cache = lif_forward(X, 0.3, rule)
    dX, dlam = lif_backward(rng.normal(size=X.shape).astype(np.float32), cache)
    floats = [(dtype, shape) for dtype, shape in made if dtype.kind == "f"]
    assert len(floats) >= 10
    assert [(d, s) for d, s in floats if d != np.float32] == [(F64, (1, T))] * 2  # made, joined
    for a in (S, cache.H, cache.lam, cache.theta, cache.k, cache.mu, cache.sigma, dX, dlam):
        assert a.dtype == np.float32
    made.clear()
    mu, sigma = fast_layer_stats(X[0])
    assert {dtype for dtype, _ in made} == {np.dtype(np.float32)}      # s, ss, mu, sigma
    assert mu.dtype == sigma.dtype == np.float32


@pytest.mark.parametrize("spread", [2.0, 1e-3])          # 1e-3: the two-pass variance runs
def test_the_fast_batchnorm_makes_float32_arrays_for_float32_data(arrays_made, spread):
    """The per-channel sums are added in float64 on purpose (C values each); every array of
    the input's size or of one row sum per sample and channel is float32 for float32 data,
    scratch included, and so are the results, the cache and the returned statistics."""
    rng = np.random.default_rng(12)
    N, C, L = 6, 3, 20
    x = (5.0 + spread * rng.normal(size=(N, C, L))).astype(np.float32)
    gamma, beta = rng.normal(1, 0.3, C).astype(np.float32), rng.normal(size=C).astype(np.float32)
    dout = rng.normal(size=(N, C, L)).astype(np.float32)
    made = arrays_made(fast_layers)
    out, cache, mean, var = fast_layers.batchnorm_forward(x, gamma, beta)
    dx, grads = fast_layers.batchnorm_backward(dout, cache)
    dx_static, grads_static = fast_layers.batchnorm_backward_static(
        np.stack([dout, dout]), cache)
    ev = fast_layers.batchnorm_eval(x, gamma, beta, mean, var)
    assert len(made) >= 10
    assert {dtype for dtype, shape in made if np.prod(shape) > C} == {np.dtype(np.float32)}
    for a in (out, cache.mean, cache.inv_std, mean, var, dx, grads["weight"], grads["bias"],
              dx_static, grads_static["weight"], grads_static["bias"], ev):
        assert a.dtype == np.float32
