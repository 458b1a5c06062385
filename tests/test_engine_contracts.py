"""Contracts of the engine's modules that no gradient check sees: initialisation ranges,
dtypes kept, the pooling and dropout modules end to end, direct-encoded inputs with dx,
optimiser state edge cases. Each test names the behaviour it pins down; several were written
to kill mutants that survived the rest of the suite (docs/TESTING.md).
"""
import re

import numpy as np
import pytest
from hypothesis import given

import dsatgo_np as dn
from dsatgo_np import kernels, optim
from dsatgo_np.gradcheck import check_backward
from dsatgo_np.model import AvgPool2d, Conv2d, Dropout, Linear, MaxPool2d, Parameter
from dsatgo_np.core.neuron import replay_rule
from dsatgo_np.module import manual_seed

from strategies import FAST, array, fd_atol

pytestmark = pytest.mark.usefixtures("each_kernel_set")


@pytest.mark.parametrize("make, fan_in", [(lambda: Linear(50, 40), 50),
                                          (lambda: Conv2d(6, 30, kernel=3), 6 * 9)])
def test_initial_weights_are_uniform_within_one_over_root_fan_in(make, fan_in):
    """PyTorch's default init, U(-b, b) with b = 1 / sqrt(fan_in): with 2000 draws the extremes
    come within 1 % of b (the chance of missing that is 2 * 0.99^2000, about 4e-9)."""
    bound = 1 / np.sqrt(fan_in)
    for name, p in make().named_parameters():
        w = p.data
        assert np.abs(w).max() <= bound, name
        if w.size >= 2000:
            assert np.abs(w).max() > 0.99 * bound, name


LAYERS = {"linear": lambda **kw: Linear(6, 5, **kw),
          "conv": lambda **kw: Conv2d(2, 3, kernel=3, bias=True, **kw)}


@pytest.mark.parametrize("make", LAYERS.values(), ids=LAYERS.keys())
def test_layers_built_without_a_generator_are_not_copies(make):
    """Each layer built without rng= draws its weights afresh from one shared generator."""
    a, b = dict(make().named_parameters()), dict(make().named_parameters())
    for name in a:
        assert not np.array_equal(a[name].data, b[name].data), name


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("make", LAYERS.values(), ids=LAYERS.keys())
def test_every_parameter_takes_the_layers_dtype(make, dtype):
    """Weight and bias alike (a float64 bias would stop a float32 forward at the dtype check)."""
    layer = make(dtype=dtype)
    for name, p in layer.named_parameters():
        assert p.data.dtype == dtype and p.grad.dtype == dtype, name
    x = np.ones((2, 1, 6) if isinstance(layer, Linear) else (2, 1, 2, 5, 5), dtype)
    assert layer.forward(x).dtype == dtype


def test_conv2d_module_adds_its_bias_to_every_output():
    """Conv2d with bias=True: the output is the bias-free convolution plus b[f] at every step,
    sample and pixel (a bias left out of the forward would pass a finite-difference check)."""
    conv = Conv2d(2, 3, kernel=3, bias=True, dtype="float64", rng=np.random.default_rng(1))
    x = np.random.default_rng(2).normal(size=(2, 2, 2, 5, 5))            # [T, B, C, H, W]
    with_bias = conv.forward(x)
    b = conv._params["bias"].data.copy()
    conv._params["bias"].data[...] = 0
    tol = 2 * 18 * np.finfo(float).eps * np.abs(with_bias).max()    # sums of C * 3 * 3 = 18 terms
    np.testing.assert_allclose(with_bias - conv.forward(x), np.broadcast_to(
        b[:, None, None], with_bias.shape), rtol=0, atol=tol)


@pytest.mark.parametrize("make", LAYERS.values(), ids=LAYERS.keys())
def test_manual_seed_restarts_the_shared_generator(make):
    """After dn.manual_seed(s), the layers built without rng= get, in order, the weights that
    layers handed np.random.default_rng(s) get; a layer given its own rng= draws nothing from
    the shared generator."""
    g = np.random.default_rng(5)
    expected = [dict(make(rng=g).named_parameters()) for _ in range(2)]
    dn.manual_seed(5)
    first = dict(make().named_parameters())
    make(rng=np.random.default_rng(99))                   # must not advance the shared one
    second = dict(make().named_parameters())
    for got, want in zip((first, second), expected):
        for name in want:
            np.testing.assert_array_equal(got[name].data, want[name].data)


def test_builders_draw_from_their_own_seed_only():
    """models.* build their layers from np.random.default_rng(seed), in order, whatever the
    shared generator has done: the first hidden layer's weights are the seed's first draws."""
    before = dn.models.mlp([12, 7, 3], seed=4)
    Linear(30, 30)                                         # advances the shared generator
    after = dn.models.mlp([12, 7, 3], seed=4)
    bound = 1 / np.sqrt(12)
    first = np.random.default_rng(4).uniform(-bound, bound, (7, 12)).astype(np.float32)
    for net in (before, after):
        np.testing.assert_array_equal(dict(net.named_parameters())["1.weight"].data, first)


def test_lif_cache_keeps_the_input_dtype():
    """theta, k, mu, sigma are recorded in X's dtype, whatever dtype the rule hands back."""
    X = np.random.default_rng(0).normal(size=(3, 2, 5)).astype(np.float32)
    rule = replay_rule(np.array([0.5, 1.0, 1.5]), np.array([1.0, 0.8, 1.2]))      # float64
    S, c = kernels.of(X).lif_forward(X, np.float32(0.2), rule)
    assert S.dtype == np.float32
    for name in ("theta", "k", "mu", "sigma"):
        assert getattr(c, name).dtype == np.float32, name
    np.testing.assert_array_equal(c.theta, np.float32([0.5, 1.0, 1.5]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pooling_modules_keep_dtype_and_route_gradients(dtype):
    x = np.random.default_rng(1).normal(size=(2, 3, 2, 4, 4)).astype(dtype)   # [T, B, C, H, W]
    for pool in (AvgPool2d(2), MaxPool2d(2)):
        out = pool.forward(x)
        assert out.shape == (2, 3, 2, 2, 2) and out.dtype == x.dtype
        dx = pool.backward(np.ones_like(out))
        assert dx.shape == x.shape and dx.dtype == x.dtype
        # every window hands back all of its upstream gradient (1): 1/4 each, or 1 to its max
        np.testing.assert_allclose(dx.reshape(-1, 2, 2, 2, 2, 2).sum(axis=(3, 5)), 1.0, rtol=1e-6)
        if isinstance(pool, MaxPool2d):
            assert set(np.unique(dx)) == {0.0, 1.0}


@pytest.mark.parametrize("k", [2, 4])
def test_avgpool_module_averages_k_by_k_windows(k):
    x = np.random.default_rng(2).normal(size=(2, 3, 2, 8, 8))             # [T, B, C, H, W]
    windows = x.reshape(2, 3, 2, 8 // k, k, 8 // k, k)
    np.testing.assert_allclose(AvgPool2d(k).forward(x), windows.mean(axis=(4, 6)), rtol=1e-12)


@FAST
@given(x=array((2, 2, 1, 4, 4), -3.0, 3.0), dout=array((2, 2, 1, 2, 2)))
def test_maxpool_module_backward(x, dout):
    """Finite differences through the module (ties excluded: no derivative there)."""
    windows = x.reshape(4, 1, 2, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(4, 1, 2, 2, 4)
    top2 = np.sort(windows, axis=-1)[..., -2:]
    if np.any(top2[..., 1] - top2[..., 0] < 1e-4):
        return                                    # a tie within the step: max is not smooth
    pool = MaxPool2d(2)
    out = pool.forward(x)
    dx = pool.backward(dout)
    check_backward(lambda x: MaxPool2d(2).forward(x), {"x": x}, dout, {"x": dx},
                   atol=fd_atol(out, dout))


def test_dropout_module():
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)
    drop = Dropout(0.5, seed=3)
    x = np.ones((4, 6, 10))                                   # [T, B, N]
    out = drop.forward(x)
    assert np.all(out == out[0])                              # one mask for every step
    assert set(np.unique(out)) == {0.0, 2.0}                  # kept values scaled by 1 / (1 - p)
    dout = np.arange(x.size, dtype=float).reshape(x.shape)
    np.testing.assert_array_equal(drop.backward(dout), dout * (out / x))
    drop.eval()
    assert drop.forward(x) is x and drop.backward(dout) is dout   # identity in eval mode
    assert Dropout(0.0).forward(x) is x
    assert not np.array_equal(Dropout(0.5, seed=0).forward(x), Dropout(0.5, seed=1).forward(x))


def test_dropout_layers_without_a_seed_draw_other_masks_and_follow_manual_seed():
    x = np.ones((2, 16, 32))
    manual_seed(7)
    first, second = Dropout(0.5), Dropout(0.5)
    a, b = first.forward(x), second.forward(x)
    assert not np.array_equal(a, b)                           # two layers, two mask streams
    manual_seed(7)
    again = Dropout(0.5)
    assert again.seed == first.seed
    np.testing.assert_array_equal(again.forward(x), a)        # reproducible from manual_seed
    np.testing.assert_array_equal(Dropout(0.5, seed=first.seed).forward(x), a)


@pytest.mark.parametrize("build, shape", [
    (lambda: dn.models.cnn((1, 6, 6), (4,), 3, T=3, dtype="float64", seed=2), (2, 1, 6, 6)),
    (lambda: dn.models.mlp([5, 6, 3], T=3, dtype="float64", seed=2), (2, 5))])
def test_direct_encoded_input_gives_the_copied_inputs_dx(build, shape):
    """The first layer's dx for a direct-encoded (stride-0) input comes from one forward on
    x[0]: it must equal the dx of the same input copied T times, at every step."""
    x0 = np.random.default_rng(4).normal(size=shape)
    outs, dxs = [], []
    for xs in (dn.encode.direct(x0, 3), np.ascontiguousarray(dn.encode.direct(x0, 3))):
        net = build()
        out = net.forward(xs)
        outs.append(out)
        dxs.append(net.backward(np.linspace(-1, 1, out.size).reshape(out.shape), need_dx=True))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-12)
    assert dxs[0].shape == (3,) + shape
    np.testing.assert_allclose(dxs[0], dxs[1], rtol=1e-10, atol=1e-13)


def test_sgd_load_state_dict_without_buffers_starts_fresh():
    p = Parameter(np.ones(3))
    opt = optim.SGD([p], lr=0.5, momentum=0.9)
    p.grad = np.ones(3)
    opt.step()                                                # buffer = 1
    opt.load_state_dict({})                                   # no momentum saved: b starts at 0
    assert opt.buffers == [None]
    p.grad = np.full(3, 2.0)
    opt.step()                                                # b = 2 (not 0.9 * 1 + 2)
    np.testing.assert_allclose(p.data, 1 - 0.5 - 0.5 * 2.0)


def test_set_threads_is_what_threads_reports():
    from dsatgo_np.fast import parallel
    saved = parallel.threads()
    try:
        parallel.set_threads(3)
        assert parallel.threads() == 3
        parallel.set_threads(1)
        assert parallel.threads() == 1
    finally:
        parallel.set_threads(saved)


class _FakeLibc:
    """Stands in for glibc: records mallopt's calls instead of changing this process's malloc."""

    def __init__(self, name):
        self.calls = []
        libc = self

        class Mallopt:
            def __call__(self, param, value):
                libc.calls.append((param, value))
                return 1
        self.mallopt = Mallopt()


def test_keep_freed_memory_in_process(monkeypatch):
    """The opt-in malloc tuning: refused by DSATGO_MALLOC=system (any case), a no-op off Linux,
    else mallopt(M_MMAP_THRESHOLD, 1 GiB) and mallopt(M_TRIM_THRESHOLD, 1 GiB); remembered."""
    from dsatgo_np.fast import allocator
    libs = []
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: libs.append(_FakeLibc(name)) or libs[-1])

    def fresh(env=None, platform="linux"):
        monkeypatch.setattr(allocator, "_applied", None)
        monkeypatch.setattr(allocator.sys, "platform", platform)
        if env is None:
            monkeypatch.delenv("DSATGO_MALLOC", raising=False)
        else:
            monkeypatch.setenv("DSATGO_MALLOC", env)
        return allocator.keep_freed_memory()

    assert fresh(" System ") is False and not libs
    assert fresh(platform="darwin") is False and not libs
    assert fresh() is True
    assert libs[-1].calls == [(-3, 1 << 30), (-1, 1 << 30)]     # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    monkeypatch.setenv("DSATGO_MALLOC", "system")
    assert allocator.keep_freed_memory() is True and len(libs) == 1   # decided once per process


def test_keep_freed_memory_loads_libc_by_its_glibc_name_when_find_library_fails(monkeypatch):
    """find_library needs ldconfig or a compiler, which slim images lack: the tuning then loads
    glibc's libc.so.6 by name."""
    from dsatgo_np.fast import allocator
    names = []
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: names.append(name) or _FakeLibc(name))
    monkeypatch.setattr(allocator.ctypes.util, "find_library", lambda name: None)
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    monkeypatch.delenv("DSATGO_MALLOC", raising=False)
    assert allocator.keep_freed_memory() is True
    assert names == ["libc.so.6"]


def test_linear_module_is_x_w_transposed_plus_b():
    """The module's own arithmetic (a bias dropped in forward and backward alike would still
    pass a finite-difference check)."""
    lin = Linear(3, 2, dtype="float64")
    lin._params["weight"].data = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]])
    lin._params["bias"].data = np.array([0.25, -2.0])
    x = np.arange(12.0).reshape(2, 2, 3)                      # [T, B, I]
    np.testing.assert_allclose(lin.forward(x), x @ lin._params["weight"].data.T + [0.25, -2.0])
    dout = np.ones((2, 2, 2))
    dx = lin.backward(dout)
    np.testing.assert_allclose(lin._params["bias"].grad, [4.0, 4.0])     # sum over T and B
    np.testing.assert_allclose(lin._params["weight"].grad, np.tile(x.reshape(4, 3).sum(0), (2, 1)))
    np.testing.assert_allclose(dx, np.full((2, 2, 3), [1.0, 1.0, 3.5]))
    assert "bias" not in dict(Linear(3, 2, bias=False).named_parameters())


def test_pooling_on_the_gpu_stand_in_matches_numpy():
    """Plain pooling on dsatgo_np.xp_strict arrays (a CuPy stand-in that refuses NumPy
    operations on its arrays): each function works in its input's array module."""
    from dsatgo_np import pooling, xp_strict as xs
    rng = np.random.default_rng(5)
    x, dout = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 3, 2, 2))
    for fwd, bwd, args in ((pooling.maxpool2d_forward, pooling.maxpool2d_backward, (2,)),
                           (pooling.avgpool2d_forward, pooling.avgpool2d_backward, (2,))):
        out, cache = fwd(x, *args)
        out_s, cache_s = fwd(xs.asarray(x), *args)
        dx_s = bwd(xs.asarray(dout), cache_s)
        assert isinstance(dx_s, xs.ndarray)
        np.testing.assert_array_equal(xs.asnumpy(out_s), out)
        np.testing.assert_array_equal(xs.asnumpy(dx_s), bwd(dout, cache))


@pytest.mark.parametrize("shape, kernel, stride", [((1, 1, 4, 4), 2, 0),      # stride < 1
                                                   ((1, 1, 8, 4), 5, 1),      # wider than W
                                                   ((1, 1, 4, 8), 5, 1),      # taller than H
                                                   ((1, 1, 17, 17), 17, 1)])  # kernel > 16
def test_maxpool_refuses_kernels_that_do_not_fit(shape, kernel, stride):
    from dsatgo_np import pooling
    message = (f"maxpool2d kernel {kernel} (stride {stride}) does not fit x {shape}: use "
               "1 <= kernel <= min(H, W), kernel <= 16 and stride >= 1")
    with pytest.raises(ValueError, match=re.escape(message)):
        pooling.maxpool2d_forward(np.zeros(shape), kernel, stride)


def test_loss_checks_name_the_problem():
    from dsatgo_np import losses
    with pytest.raises(ValueError, match=r"readout as an array \[T, B, K\], got \(2, 3\)"):
        losses.cross_entropy(np.zeros((2, 3)), np.zeros(2, int))
    with pytest.raises(ValueError, match=r"at least one step, sample and class: .* shape \(1, 2, 0\)"):
        losses.mse(np.zeros((1, 2, 0)), np.zeros(2, int))
    for y in ([0, 3], [-1, 0]):                      # above K - 1, below 0: each alone refused
        with pytest.raises(ValueError, match=r"class indices in \[0, 3\)"):
            losses.cross_entropy(np.zeros((1, 2, 3)), np.array(y))
    loss, d = losses.cross_entropy(np.zeros((1, 2, 1)), np.zeros(2, int))   # one class: valid
    assert float(loss) == 0.0 and np.all(d == 0)


@pytest.mark.parametrize("neuron, lam, message", [
    ("lif", 2.0, r"LIF needs 0 <= lam <= 1 \(lam > 1 makes V grow\)$"),
    ("plif", 1.0, r"PLIF needs 0 < lam < 1$")])
def test_decay_errors_name_the_neurons_range(neuron, lam, message):
    with pytest.raises(ValueError, match=message):
        dn.model.Spiking(2, neuron=neuron, lam=lam)


@pytest.mark.parametrize("method", ["at", "ds-atgo"])
def test_threshold_grad_reaches_the_models_backward(method):
    """With a measured threshold the option adds dL/dtheta's term to dx (its value is checked
    against finite differences in test_option_matrix.py); without it the term is absent."""
    x = np.random.default_rng(6).normal(size=(2, 4, 3))
    y = np.array([0, 1, 1, 0])
    dxs = []
    for tgrad in (False, True):
        net = dn.models.mlp([3, 5, 2], T=2, method=method, threshold_grad=tgrad,
                            dtype="float64", seed=1, smooth=True, k0=2.0)
        _, dout = dn.losses.cross_entropy(net.forward(x), y)
        dxs.append(net.backward(dout, need_dx=True))
    assert np.abs(dxs[1] - dxs[0]).max() > 1e-6


def test_split_edges():
    from dsatgo_np.fast import parallel
    assert parallel.split(4, 3) == [(0, 1), (1, 2), (2, 4)]          # grain 1 by default
    assert parallel.split(4, 3, grain=2) == [(0, 2), (2, 4)]
    assert parallel.split(0, 3) == []


def test_spiking_layer_errors_name_the_layer():
    with pytest.raises(ValueError, match=r"^Spiking: T must be a whole number >= 1, got 0$"):
        dn.model.Spiking(0)


def test_detach_reset_reaches_the_models_backward():
    """detach_reset drops the reset path dS~ = dS - dV H from the neuron's backward (checked
    against finite differences in test_option_matrix.py): the model's dx must change with it."""
    x = np.random.default_rng(8).normal(0.5, 1.0, size=(3, 4, 3))
    y = np.array([0, 1, 1, 0])
    dxs = []
    for detach in (False, True):
        net = dn.models.mlp([3, 5, 2], T=3, method="vanilla", detach_reset=detach,
                            dtype="float64", seed=1, smooth=True, k0=2.0)
        _, dout = dn.losses.cross_entropy(net.forward(x), y)
        dxs.append(net.backward(dout, need_dx=True))
    assert np.abs(dxs[1] - dxs[0]).max() > 1e-6


def test_cross_entropy_is_stable_for_large_logits():
    """The log-softmax subtracts each row's maximum: logits of 1000 stay finite and exact."""
    from dsatgo_np import losses
    out = np.array([[[1000.0, 998.0, 990.0]]])                  # [T=1, B=1, K=3]
    loss, d = losses.cross_entropy(out, np.array([1]))
    z = np.array([0.0, -2.0, -10.0])
    np.testing.assert_allclose(float(loss), -(z[1] - np.log(np.exp(z).sum())), rtol=1e-14)
    assert np.all(np.isfinite(d))


def test_conv_refuses_a_stride_of_zero():
    from dsatgo_np import conv
    with pytest.raises(ValueError, match="integer stride >= 1"):
        conv.conv2d_forward(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), None, stride=0, padding=1)


def test_adam_state_keeps_the_parameters_dtype():
    p = Parameter(np.ones(3, np.float32))
    opt = optim.Adam([p], lr=0.1)
    opt.load_state_dict({"t": 2, "m.0": np.ones(3), "v.0": np.ones(3)})    # float64 on disk
    assert opt.m[0].dtype == np.float32 and opt.v[0].dtype == np.float32


def test_no_mallopt_and_no_affinity_fall_back(monkeypatch):
    """A libc without mallopt (musl) leaves malloc alone; without sched_getaffinity (not Linux)
    the thread count is the CPU count."""
    from dsatgo_np.fast import allocator, parallel

    def no_libc(name):
        raise OSError("no such library")
    monkeypatch.setattr(allocator.ctypes, "CDLL", no_libc)
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    monkeypatch.delenv("DSATGO_MALLOC", raising=False)
    assert allocator.keep_freed_memory() is False
    monkeypatch.delenv("DSATGO_THREADS", raising=False)
    monkeypatch.delattr(parallel.os, "sched_getaffinity", raising=False)
    for cpus, expected in ((1, 1), (None, 1), (6, 6)):
        monkeypatch.setattr(parallel.os, "cpu_count", lambda cpus=cpus: cpus)
        assert parallel._default_threads() == expected


def test_an_optimiser_without_parameters_names_the_fix():
    with pytest.raises(ValueError, match=r"^SGD got no parameters to optimise: pass "
                                         r"net.parameters\(\) of a network that has some$"):
        optim.SGD([], lr=0.1)


def test_threshold_vjp_of_a_constant_layer_is_the_means_term_only():
    """sigma = 0 (every H[t] equal): the std has no derivative there; its term is 0, the
    mean's 1/N stays, and nothing is inf or NaN, also through the neuron's backward."""
    from dsatgo_np.core.neuron import SpikeConfig, lif_backward, lif_forward, make_rule
    from dsatgo_np.core.threshold import layer_stats, threshold_vjp
    h = np.full((4, 5), 0.75)                                   # sums exact: sigma is 0
    mu, sigma = layer_stats(h)
    assert sigma == 0
    got = threshold_vjp(np.asarray(-2.0), h, mu, sigma, f_c=1.5)
    np.testing.assert_array_equal(got, np.full(h.shape, -2.0 * 1.5 * (1 / h.size)))
    spread = np.arange(20.0).reshape(4, 5)                     # sigma > 0: the full formula
    mu, sigma = layer_stats(spread)
    want = -2.0 * 1.5 * (1 / 20 + (spread - mu) / (19 * sigma))
    np.testing.assert_allclose(threshold_vjp(np.asarray(-2.0), spread, mu, sigma, 1.5), want,
                               rtol=1e-15, atol=1e-15)
    lam = np.asarray(0.3)
    X = np.full((3, 4, 6), 0.5)                                 # every H[t] constant
    rule = make_rule(SpikeConfig(method="ds-atgo", threshold_grad=True), lam, True)
    _, cache = lif_forward(X, lam, rule, smooth=True, threshold_grad=True)
    dX, _ = lif_backward(np.ones_like(X), cache)
    assert np.isfinite(dX).all()
