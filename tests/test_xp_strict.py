"""The GPU code path on any machine: xp_strict, a CuPy stand-in backed by NumPy.

Its arrays refuse what CuPy refuses (implicit conversion to NumPy, host arrays mixed in, keyword
arguments CuPy lacks) and count every device-to-host transfer. Under it, every model, method and
neuron must give NumPy's numbers: with the plain kernels both run the very same NumPy operations,
so the results are equal bit for bit (assert_array_equal, no tolerance).
"""
import contextlib
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import dsatgo_np as dn
from dsatgo_np import backend, kernels, neuron, xp_strict as xs
from dsatgo_np.checkpoint import read_checkpoint
from tiny_models import build  # noqa: E402

pytestmark = pytest.mark.xp_strict
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def plain_kernels():
    """NumPy on the plain core, as the stand-in runs: the same operations, the same bits."""
    before = kernels.current()
    dn.set_kernels("plain")
    try:
        yield
    finally:
        dn.set_kernels(before)


def host(a):
    return backend.to_numpy(a)


# --- the stand-in itself ---------------------------------------------------------------------

def test_numpy_conversion_of_a_strict_array_raises_typeerror():
    a = xs.asarray(np.ones(3, np.float32))
    for convert in (np.asarray, np.array, np.asanyarray):
        with pytest.raises(TypeError, match="not allowed"):
            convert(a)
    with pytest.raises(TypeError):                           # what checkpoint writers call
        np.savez(os.devnull, v=a)
    assert not isinstance(a, np.ndarray)


@pytest.mark.parametrize("call, message", [
    (lambda a: xs.einsum("ij->i", a, out=xs.zeros(2, np.float32)), r"einsum\(out="),
    (lambda a: np.einsum("ij->i", a, out=xs.zeros(2, np.float32)), r"einsum\(out="),
    (lambda a: np.vecdot(a, a), "vecdot"),
    (lambda a: a.sum(where=a > 0), r"sum\(where="),
    (lambda a: np.maximum.reduce(a), "maximum.reduce"),
    (lambda a: a + np.ones(3, np.float32), "NumPy array operand"),
    (lambda a: xs.exp(np.ones(3)), "NumPy array operand"),
    (lambda a: np.lib.stride_tricks.sliding_window_view(a, 2, writeable=True), "writeable"),
    (lambda a: a.__setitem__(Ellipsis, np.ones((2, 3))), "numpy_array"),
    (lambda a: xs.add([1.0, 2.0, 3.0], a), "list operand"),
    (lambda a: np.multiply.at(a, xs.asarray(np.array([0])), 2.0), "multiply.at"),
])
def test_what_cupy_lacks_is_refused_with_a_typeerror(call, message):
    a = xs.asarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    with pytest.raises(TypeError, match=message):
        call(a)


def test_the_stand_in_behaves_as_cupy_where_cupy_differs_from_numpy():
    """What CuPy does and NumPy does not: 0-d arrays from allclose and array_equal (their
    truth value a read), out-of-bounds fancy indices wrapped around, writable broadcast views,
    flags without writeable, astype(copy=False) of its own dtype the array itself, add.at,
    linalg.norm, and a read back when histogram's bins live on the device."""
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    a = xs.asarray(x)
    for result in (xs.allclose(a, a), xs.array_equal(a, a), np.allclose(a, a)):
        assert isinstance(result, xs.ndarray) and result.shape == ()
        with xs.count_transfers() as c:
            assert bool(result)
        assert c.count == 1
    np.testing.assert_array_equal(host(a[xs.asarray(np.array([2, 3]))]), x[[0, 1]])  # 3 -> 1
    np.testing.assert_array_equal(host(a[:, xs.asarray(np.array([-1, 4]))]), x[:, [2, 1]])
    row = xs.asarray(np.zeros(3, np.float32))
    view = xs.broadcast_to(row, (2, 3))
    view[1, 2] = 7.0                                         # CuPy writes through
    assert host(row).tolist() == [0.0, 0.0, 7.0] and host(view)[0, 2] == 7.0
    assert not hasattr(a.flags, "writeable") and a.flags.c_contiguous and a.flags.owndata
    assert a.astype(np.float32, copy=False) is a and a.astype(np.float64) is not a
    counts = xs.zeros(3, np.float32)
    np.add.at(counts, xs.asarray(np.array([0, 0, 2])), 1.0)
    assert host(counts).tolist() == [2.0, 0.0, 1.0]
    assert float(xs.linalg.norm(a)) == pytest.approx(np.linalg.norm(x))
    with xs.count_transfers() as c:
        xs.histogram(a, bins=xs.asarray(np.array([0.0, 2.5, 6.0])))
    assert c.count == 1


def test_numpy_functions_and_operators_dispatch_to_the_stand_in():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 4)), rng.normal(size=(4, 2))
    a, b = xs.asarray(x), xs.asarray(y)
    cases = [(np.einsum("ij,jk->ik", a, b), np.einsum("ij,jk->ik", x, y)),
             (np.stack([a, a]), np.stack([x, x])), (np.tanh(a) * 2 - a, np.tanh(x) * 2 - x),
             (a @ b, x @ y), (np.clip(a, -0.5, 0.5), np.clip(x, -0.5, 0.5)),
             (a.std(ddof=1), x.std(ddof=1)), (np.where(a > 0, a, 0.0), np.where(x > 0, x, 0.0)),
             (a[1:, ::2].T, x[1:, ::2].T), (a.sum(), x.sum())]
    for got, want in cases:
        assert isinstance(got, xs.ndarray)                   # scalars too: 0-d arrays, as CuPy
        np.testing.assert_array_equal(host(got), want)
    c = a.copy()
    same = c
    c += 1                                                   # in place: the same object
    assert c is same and np.array_equal(host(c), x + 1)


def test_every_device_to_host_transfer_is_counted():
    a = xs.asarray(np.arange(6, dtype=np.float64))
    reads = [lambda: float(a.sum()), lambda: a.max().item(), lambda: bool(a[0] > 0),
             lambda: int(a[2]), lambda: a.tolist(), lambda: a.get(), lambda: xs.asnumpy(a),
             lambda: backend.to_numpy(a), lambda: a[a > 2], lambda: f"{a.sum():.1f}"]
    for read in reads:
        with xs.count_transfers() as c:
            read()
        assert c.count == 1
    with xs.count_transfers() as c:                          # device-side work: no transfer
        b = (a * 2 + 1).reshape(2, 3).sum(axis=0)
        a[1] = b[0]
    assert c.count == 0 and c.uploads == 0
    with xs.count_transfers() as c:
        xs.asarray(np.ones(2))
        xs.asarray(0.5)
    assert (c.count, c.uploads) == (0, 2)


def test_random_generator_draws_on_the_device_as_cupy_does_not_numpys_numbers():
    """Only what holds on CuPy: shapes, dtypes, ranges; other numbers than NumPy's from the
    same seed (cupy.random.default_rng(5).random(4) is not NumPy's), and no permutation."""
    g, ref = xs.random.default_rng(3), np.random.default_rng(3)
    u = g.random((2, 3), dtype=np.float32)
    z = g.standard_normal(400)
    k = g.integers(0, 5, 600)
    for got, dtype, shape in ((u, np.float32, (2, 3)), (z, np.float64, (400,)),
                              (k, np.int64, (600,))):
        assert isinstance(got, xs.ndarray) and got.dtype == dtype and got.shape == shape
    assert ((0 <= host(u)) & (host(u) < 1)).all()
    assert set(host(k).tolist()) == {0, 1, 2, 3, 4}
    assert abs(host(z).mean()) < 0.3 and 0.8 < host(z).std() < 1.2      # 400 draws: 6 sigma
    assert not np.array_equal(host(u), ref.random((2, 3), dtype=np.float32))
    with pytest.raises(AttributeError):
        g.permutation(5)


def test_backend_treats_the_stand_in_as_the_gpu_module():
    a = xs.asarray(np.ones(2, np.float32))
    assert backend.get_xp(a) is xs and backend.get_xp(np.ones(2), a) is xs
    assert backend.get_backend("strict") is xs and not backend.is_numpy(xs)
    assert "strict" in backend.BACKENDS
    assert backend.to_device(np.ones(2), xs).__class__ is xs.ndarray
    assert isinstance(backend.to_device(a, np), np.ndarray)
    with pytest.raises(ValueError, match="choose one of numpy, cupy, strict"):
        backend.get_backend("jax")


def test_module_to_strict_moves_every_parameter_and_buffer_and_back():
    net = dn.models.cnn((1, 6, 6), (3,), 2, T=2, seed=4)
    before = net.state_dict()
    net.to("strict")
    arrays = [p.data for p in net.parameters()] + [p.grad for p in net.parameters()]
    arrays += [b for _, b in net.named_buffers()]
    assert all(isinstance(a, xs.ndarray) for a in arrays)
    after = net.state_dict()                                 # NumPy copies again
    assert all(isinstance(v, np.ndarray) for v in after.values())
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)
    net.to("numpy")
    assert all(isinstance(p.data, np.ndarray) for p in net.parameters())


# --- the engine under the stand-in: equal to NumPy --------------------------------------------

def run_step(net, x, y, xp):
    """forward (train), loss, backward with dx, then an eval forward; everything to the host."""
    xin = dn.encode.direct(xp.asarray(x), net.T)
    out = net.forward(xin)
    loss, d = dn.losses.cross_entropy(out, xp.asarray(y))
    net.zero_grad()
    dx = net.backward(d, need_dx=True)
    if xp is xs:                                             # never left the device
        assert all(isinstance(a, xs.ndarray) for a in (out, loss, dx))
    results = {"out": out, "loss": loss, "dx": dx}
    results.update({"grad " + k: p.grad for k, p in net.named_parameters()})
    results.update({"buffer " + k: b for k, b in net.named_buffers()})
    net.eval()
    results["eval out"] = net.forward(xin)
    net.train()
    return {k: host(v) for k, v in results.items()}


def compare_step(name, method, neuron_kind="lif"):
    rng = np.random.default_rng(7)
    (net_np, shape), (net_xs, _) = (build(name, method, neuron_kind) for _ in range(2))
    x = rng.normal(size=(5,) + shape).astype(np.float32)
    y = rng.integers(0, 3, 5)
    net_xs.to("strict")
    with plain_kernels():
        want = run_step(net_np, x, y, np)
        got = run_step(net_xs, x, y, xs)
    assert want.keys() == got.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=f"{name} {method} {k}")
    assert 0 < want["out"].std()                             # a network that computes something


@pytest.mark.parametrize("method", dn.METHODS)
@pytest.mark.parametrize("name", ["mlp", "cnn", "vgg", "sew_resnet"])
def test_models_forward_backward_equal_numpy(name, method):
    compare_step(name, method)


@pytest.mark.parametrize("method", ["vanilla", "ds-atgo", "mpd-agl"])
@pytest.mark.parametrize("name", ["mlp", "cnn", "vgg", "sew_resnet"])
def test_plif_models_equal_numpy(name, method):
    compare_step(name, method, "plif")


def lif_cases():
    """(config, training, neuron) cases that cover every branch of the rule and the core."""
    for method in dn.METHODS:
        yield neuron.SpikeConfig(method=method), True
    yield neuron.SpikeConfig(method="ds-atgo"), False                     # running thresholds
    yield neuron.SpikeConfig(method="ds-atgo", running=False), False      # batch statistics
    yield neuron.SpikeConfig(method="at", threshold="estimated"), True
    yield neuron.SpikeConfig(method="ds-atgo", width="std", detach_reset=True), True
    yield neuron.SpikeConfig(method="tgo", smooth=True), True
    yield neuron.SpikeConfig(method="ds-atgo", threshold_grad=True), True


@pytest.mark.parametrize("case", range(len(list(lif_cases()))))
def test_lif_core_equals_numpy(case):
    cfg, training = list(lif_cases())[case]
    rng = np.random.default_rng(case)
    X = rng.normal(0.5, 1.0, size=(4, 3, 7)).astype(np.float32)
    dS = rng.normal(size=X.shape).astype(np.float32)
    running = np.linspace(0.6, 1.2, 4).astype(np.float32)
    results = []
    for xp in (np, xs):
        lam = xp.asarray(np.float32(0.3))
        g = xp.asarray(np.float32(0.8))
        rule = neuron.make_rule(cfg, lam, training, xp.asarray(running), g)
        S, cache = neuron.lif_forward(xp.asarray(X), lam, rule, cfg.smooth, cfg.detach_reset,
                                      cfg.threshold_grad, cfg.f_c)
        dX, dlam = neuron.lif_backward(xp.asarray(dS), cache, need_dlam=True)
        results.append([host(v) for v in (S, cache.H, cache.theta, cache.k, dX, dlam)])
    for name, want, got in zip(("S", "H", "theta", "k", "dX", "dlam"), *results):
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert 0 < results[0][0].mean() < 1                       # some neurons fire, not all


def test_dropout_and_poisson_encoding_equal_numpy():
    rng = np.random.default_rng(2)
    x = rng.random((3, 4, 5)).astype(np.float32)
    outs = []
    for xp in (np, xs):
        drop = dn.model.Dropout(0.4, seed=5)
        out = drop.forward(xp.asarray(x))
        dx = drop.backward(xp.ones_like(out))
        spikes = dn.encode.poisson(xp.asarray(x[0]), 3, np.random.default_rng(1))
        outs.append([host(v) for v in (out, dx, spikes)])
    for want, got in zip(*outs):
        np.testing.assert_array_equal(got, want)


def test_diagnostics_equal_numpy():
    from dsatgo_np import diagnostics
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 1, 8, 8)).astype(np.float32)
    found = []
    for xp in (np, xs):
        net, _ = build("cnn", "ds-atgo")
        net.to("numpy" if xp is np else "strict")
        with plain_kernels():
            net.forward(dn.encode.direct(xp.asarray(x), net.T))
        found.append((diagnostics.collect(net), diagnostics.histograms(net, bins=12)))
    (stats_np, hist_np), (stats_xs, hist_xs) = found
    assert stats_np.keys() == stats_xs.keys() == hist_np.keys() == hist_xs.keys() != set()
    for name in stats_np:
        for key, want in stats_np[name].items():
            np.testing.assert_array_equal(stats_xs[name][key], want, err_msg=f"{name} {key}")
        for key, want in hist_np[name].items():
            np.testing.assert_array_equal(hist_xs[name][key], want, err_msg=f"{name} {key}")


@pytest.mark.parametrize("make", [
    lambda ps: dn.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True),
    lambda ps: dn.optim.Adam(ps, lr=0.01, weight_decay=1e-3)])
def test_optimiser_steps_equal_numpy(make):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 12)).astype(np.float32), rng.integers(0, 3, 6)
    states = []
    for xp in (np, xs):
        net = dn.models.mlp([12, 8, 3], T=2, seed=2).to("numpy" if xp is np else "strict")
        opt = make(net.parameters())
        with plain_kernels():
            for _ in range(3):
                out = net.forward(dn.encode.direct(xp.asarray(x), 2))
                _, d = dn.losses.cross_entropy(out, xp.asarray(y), label_smoothing=0.1)
                net.zero_grad()
                net.backward(d)
                opt.step()
        states.append((net.state_dict(), {k: host(v) for k, v in opt.state_dict().items()}))
    (model_np, opt_np), (model_xs, opt_xs) = states
    for k in model_np:
        np.testing.assert_array_equal(model_xs[k], model_np[k], err_msg=k)
    for k in opt_np:
        np.testing.assert_array_equal(opt_xs[k], opt_np[k], err_msg=k)


def test_losses_and_accuracy_equal_numpy():
    rng = np.random.default_rng(1)
    out, y = rng.normal(size=(3, 5, 4)).astype(np.float32), rng.integers(0, 4, 5)
    for loss_fn in (dn.losses.cross_entropy, dn.losses.mse):
        want = [np.asarray(v) for v in loss_fn(out, y)]
        got = [host(v) for v in loss_fn(xs.asarray(out), xs.asarray(y))]
        for w, g in zip(want, got):
            np.testing.assert_array_equal(g, w)
    assert dn.losses.accuracy(xs.asarray(out), xs.asarray(y)) == dn.losses.accuracy(out, y)


def test_save_and_load_a_model_trained_on_the_stand_in(tmp_path):
    net = dn.models.cnn((1, 8, 8), (3,), 3, T=2, method="ds-atgo").to("strict")
    opt = dn.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x = xs.asarray(np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32))
    out = net.forward(dn.encode.direct(x, 2))
    _, d = dn.losses.cross_entropy(out, xs.asarray(np.array([0, 1, 2, 0])))
    net.backward(d)
    opt.step()                                  # running thresholds and BN statistics moved too
    dn.save(net, tmp_path / "net.npz")
    again = dn.load(tmp_path / "net.npz", backend="strict")
    assert all(isinstance(p.data, xs.ndarray) for p in again.parameters())
    net.eval(), again.eval()
    np.testing.assert_array_equal(host(again.forward(dn.encode.direct(x, 2))),
                                  host(net.forward(dn.encode.direct(x, 2))))


# --- host synchronisations ----------------------------------------------------------------------

def transfers_of_one_step(hidden, T, method):
    """Host transfers (to host, to device) of one training step after a warm-up step."""
    net = dn.models.mlp([10, *hidden, 3], T=T, method=method, seed=0).to("strict")
    opt = dn.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    x = xs.asarray(rng.random((4, 10), dtype=np.float32))
    y = xs.asarray(rng.integers(0, 3, 4))

    def step():
        out = net.forward(dn.encode.direct(x, T))
        loss, d = dn.losses.cross_entropy(out, y)
        net.zero_grad()
        net.backward(d)
        opt.step()
        return loss

    step()                                                   # momentum buffers made
    with xs.count_transfers() as c:
        step()
    return c.count, c.uploads


@pytest.mark.parametrize("method", dn.METHODS)
def test_host_transfers_of_a_training_step_do_not_grow_with_layers_or_T(method):
    """forward, loss, backward and an SGD step keep the network's numbers on the device: the
    loss stays a 0-d device array; thresholds, widths and BatchNorm statistics are device
    arrays too. What reads back are the input checks, once per step: encode.direct's "is the
    input finite" (1) and cross_entropy's label range, y.min() and y.max() (2): at most 3,
    the same for 1 or 3 hidden layers and for T = 2 or 6. Host-to-device copies (device
    scalars made from Python numbers) may happen per layer and forward, not per time step."""
    small = transfers_of_one_step([8], 2, method)
    deep = transfers_of_one_step([8, 8, 8], 2, method)
    long = transfers_of_one_step([8], 6, method)
    assert small[0] == deep[0] == long[0] <= 3
    assert long[1] == small[1], "uploads grow with T: a device scalar is remade at every step"


# --- the training command on the stand-in ---------------------------------------------------------

def small_run(tmp_path, name, **kw):
    from dsatgo_np import train
    opts = dict(dataset="digits", hidden=[32], epochs=2, batch_size=50, lr=0.1, plots=False,
                train_subset=400, backend="strict", out=str(tmp_path / name),
                data_dir=str(tmp_path / "data"))
    opts.update(kw)
    return train.Config(**opts)


def test_train_command_on_the_stand_in_trains_saves_and_evaluates(tmp_path):
    run = tmp_path / "cli"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               DSATGO_THREADS="1")
    cmd = [sys.executable, "-m", "dsatgo_np.train", "--dataset", "digits", "--backend", "strict",
           "--hidden", "32", "--epochs", "3", "--lr", "0.2", "--batch-size", "50",
           "--train-subset", "400",
           "--method", "ds-atgo", "--out", str(run), "--data-dir", str(tmp_path / "data"),
           "--quiet", "--no-plots"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert {"last.npz", "best.npz", "metrics.jsonl"} <= set(os.listdir(run))
    _, _, meta = read_checkpoint(run / "best.npz")
    assert meta["config"]["backend"] == "strict" and meta["test_acc"] > 0.5
    r = subprocess.run([sys.executable, "-m", "dsatgo_np.train", "evaluate", str(run / "best.npz"),
                        "--backend", "strict", "--data-dir", str(tmp_path / "data")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{100 * meta['test_acc']:.2f} %" in r.stdout.split("recorded")[0]


def test_ctrl_c_and_resume_on_the_stand_in_match_an_uninterrupted_run(tmp_path):
    from dsatgo_np import train
    straight = small_run(tmp_path, "straight")
    train.fit(straight, verbose=False)

    def ctrl_c(epoch, i):                                    # a real SIGINT mid-epoch
        if (epoch, i) == (0, 3):
            os.kill(os.getpid(), signal.SIGINT)
    cut = small_run(tmp_path, "cut")
    first = train.fit(cut, on_batch=ctrl_c, verbose=False)
    assert first["interrupted"] and first["position"]["batch"] == 4
    train.fit(cut, resume=True, verbose=False)
    a_model, a_opt, a_meta = read_checkpoint(os.path.join(straight.out, "last.npz"))
    b_model, b_opt, b_meta = read_checkpoint(os.path.join(cut.out, "last.npz"))
    for k in a_model:
        np.testing.assert_array_equal(b_model[k], a_model[k], err_msg=k)
    for k in a_opt:
        np.testing.assert_array_equal(b_opt[k], a_opt[k], err_msg=k)
    assert a_meta["test_acc"] == b_meta["test_acc"] > 0.5
    r = train.evaluate_checkpoint(os.path.join(cut.out, "best.npz"), backend="strict")
    assert r["test_acc"] == r["recorded"]


def fit_transfers_per_step(tmp_path, hidden):
    """(to host, to device) of each training step of train.fit after the first, diagnostics
    (recorded every diag_every batches) kept out."""
    from dsatgo_np import train
    counts, last = [], []

    def on_batch(epoch, i):
        now = (c.count, c.uploads)
        if last:
            counts.append((now[0] - last[-1][0], now[1] - last[-1][1]))
        last.append(now)
    cfg = small_run(tmp_path, f"depth{len(hidden)}", hidden=hidden, epochs=1, diag_every=10**6)
    with xs.count_transfers() as c:
        train.fit(cfg, on_batch=on_batch, verbose=False, progress=False)
    return counts


def test_train_loop_reads_back_the_same_few_numbers_per_step_whatever_the_depth(tmp_path):
    """train.fit reads per step what it logs (the loss, the predictions) and what the input
    checks need; a per-parameter or per-layer read (a sync each on a GPU) would grow with
    depth. (Uploads of device scalars, once per layer and forward, may grow with depth.)"""
    shallow = [down for down, _ in fit_transfers_per_step(tmp_path, [16])]
    deep = [down for down, _ in fit_transfers_per_step(tmp_path, [16, 16, 16, 16])]
    assert len(set(shallow)) == 1 and shallow == deep, (shallow[:2], deep[:2])


def test_accuracy_of_a_device_readout_against_host_labels():
    """losses.accuracy moves host labels to the readout's device (CuPy refuses the mix)."""
    out = np.zeros((2, 4, 3), np.float32)
    out[:, np.arange(4), [0, 1, 2, 0]] = 1.0                 # predicts 0, 1, 2, 0
    y = np.array([0, 1, 1, 0])
    assert dn.losses.accuracy(xs.asarray(out), y) == 0.75
    with xs.count_transfers() as count:
        dn.losses.cross_entropy(xs.asarray(out), xs.asarray(y))
    assert count.count == 1                                  # the labels' range, in one read
