"""Whole networks: end-to-end gradients, state dicts, clear errors, and learning on real digits."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import dsatgo_np as dn
from dsatgo_np.gradcheck import check_backward
from dsatgo_np.model import Spiking

from strategies import FEW, labels, spread_array


def spiking_layers(net):
    return [m for m in net.modules() if isinstance(m, Spiking)]


def freeze_thresholds(net, x):
    """Run once, then replay each layer's recorded theta[t] and k[t] (constants in backward)."""
    net.forward(x)
    for m in spiking_layers(net):
        m.hold_thresholds(m.cache.theta, m.cache.k)


def away_from_kinks(net, margin=1e-4):
    for m in spiking_layers(net):
        c = m.cache
        shape = (-1,) + (1,) * (c.H.ndim - 1)
        d = np.abs(c.H - c.theta.reshape(shape))
        if not np.all(np.abs(d - 0.5 * c.k.reshape(shape)) > margin):
            return False
    return True


def check_network(net, x, y, seed):
    """Finite differences of the loss w.r.t. every parameter and the input."""
    freeze_thresholds(net, x)
    out = net.forward(x)
    if not away_from_kinks(net):
        return False
    loss, dout = dn.losses.cross_entropy(out, y, label_smoothing=0.1)
    net.zero_grad()
    dx = net.backward(dout, need_dx=True)
    params = dict(net.named_parameters())

    def loss_of(**arrays):
        saved = {k: p.data for k, p in params.items()}
        for k, p in params.items():
            p.data = arrays[k]
        try:
            return dn.losses.cross_entropy(net.forward(arrays["input"]), y, 0.1)[0]
        finally:
            for k, p in params.items():
                p.data = saved[k]
    inputs = {k: p.data.copy() for k, p in params.items()}
    inputs["input"] = np.ascontiguousarray(x)
    grads = {k: p.grad.copy() for k, p in params.items()}
    grads["input"] = dx
    check_backward(loss_of, inputs, np.asarray(1.0), grads, tol=1e-5, atol=1e-8)
    return True


@pytest.mark.parametrize("neuron", ["lif", "plif"])
@pytest.mark.parametrize("method", dn.METHODS)
@FEW
@given(x=spread_array((3, 4, 5), -2.0, 2.0, min_std=0.3, axis=2), y=labels(4, 3),
       seed=st.integers(0, 3))
def test_mlp_end_to_end_gradient(method, neuron, x, y, seed):
    """Two spiking layers: each one's backward feeds the other's (every method x neuron)."""
    wide = {} if method == "mpd-agl" else {"k0": 2.0}       # mpd-agl's width follows g
    net = dn.models.mlp([5, 7, 6, 3], T=3, method=method, neuron=neuron, dtype="float64",
                        seed=seed, smooth=True, **wide)
    assume(check_network(net, x, y, seed))


def test_cnn_and_sew_end_to_end_gradient():
    rng = np.random.default_rng(0)
    net = dn.models.cnn(in_shape=(2, 4, 4), channels=(3, 2), n_classes=3, T=2, dtype="float64",
                        smooth=True, k0=2.0, neuron="plif")
    x = rng.normal(size=(2, 3, 2, 4, 4))
    assert check_network(net, x, rng.integers(0, 3, 3), 0)
    net = dn.models.sew_resnet(in_shape=(2, 4, 4), n_classes=3, blocks=(1, 1), channels=(2, 3),
                               head=4, T=2, dtype="float64", smooth=True, k0=2.0)
    x = rng.normal(size=(2, 2, 2, 4, 4))
    assert check_network(net, x, rng.integers(0, 3, 2), 0)


def test_static_input_gives_the_same_result_as_a_copied_one():
    """Direct encoding is a broadcast view: layers compute once; results must not change."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 1, 6, 6))
    for build in (lambda: dn.models.mlp([36, 8, 3], T=3, dtype="float64", seed=2),
                  lambda: dn.models.cnn((1, 6, 6), (4,), 3, T=3, dtype="float64", seed=2)):
        a, b = build(), build()
        xs = dn.encode.direct(x, 3)
        oa, ob = a.forward(xs), b.forward(np.ascontiguousarray(xs))
        np.testing.assert_allclose(oa, ob, rtol=1e-12)
        d = rng.normal(size=oa.shape)
        a.backward(d)
        b.backward(d)
        for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
            np.testing.assert_allclose(pa.grad, pb.grad, rtol=1e-10, atol=1e-12, err_msg=na)
        for (na, ba), (nb, bb) in zip(a.named_buffers(), b.named_buffers()):
            np.testing.assert_allclose(ba, bb, rtol=1e-12, err_msg=na)   # BN running stats
        assert any(getattr(m, "static", False) for m in a.modules()
                   if isinstance(m, dn.model.BatchNorm))                 # the path under test


def test_zero_grad_is_lazy_but_never_shows():
    """zero_grad only marks gradients; reading one gives zeros, the next add_grad writes."""
    p = dn.model.Parameter(np.ones(3))
    p.add_grad(np.full(3, 2.0))
    np.testing.assert_array_equal(p.grad, [2.0, 2.0, 2.0])     # onto the zeros it starts with
    p.zero_grad()
    p.add_grad(np.array([1.0, 2.0, 3.0]))
    p.add_grad(np.array([1.0, 1.0, 1.0]))
    np.testing.assert_array_equal(p.grad, [2.0, 3.0, 4.0])     # written, then accumulated
    p.zero_grad()
    np.testing.assert_array_equal(p.grad, [0.0, 0.0, 0.0])     # read while marked: zeros
    p.add_grad(np.full(3, 5.0))
    np.testing.assert_array_equal(p.grad, [5.0, 5.0, 5.0])


def test_named_parameters_order_and_layouts():
    net = dn.models.mlp([784, 512, 10], T=4, neuron="plif")
    names = [(n, p.data.shape) for n, p in net.named_parameters()]
    assert names == [("1.weight", (512, 784)), ("2.weight", (512,)), ("2.bias", (512,)),
                     ("3.w", ()), ("4.weight", (10, 512)), ("4.bias", (10,))]
    assert float(1 / (1 + np.exp(-net[3]._params["w"].data))) == pytest.approx(0.2)
    cnn = dn.models.cnn(in_shape=(1, 28, 28), channels=(32, 64))
    assert cnn[0]._params["weight"].data.shape == (32, 1, 3, 3)


def test_state_dict_round_trip_keeps_bn_and_running_thresholds(tmp_path):
    rng = np.random.default_rng(3)
    net = dn.models.mlp([6, 8, 3], T=2, seed=0)
    for _ in range(3):
        net.forward(dn.encode.direct(rng.normal(size=(5, 6)).astype(np.float32), 2))
    state = net.state_dict()
    assert not np.allclose(state["3.running_threshold"], 1.0)
    assert not np.allclose(state["2.running_mean"], 0.0)
    dn.checkpoint.save_npz(tmp_path / "ck.npz", state)
    other = dn.models.mlp([6, 8, 3], T=2, seed=99).load_state_dict(dn.checkpoint.load_npz(tmp_path / "ck.npz"))
    x = dn.encode.direct(rng.normal(size=(5, 6)).astype(np.float32), 2)
    np.testing.assert_array_equal(net.eval().forward(x), other.eval().forward(x))


def test_eval_uses_running_thresholds():
    net = dn.models.mlp([6, 8, 3], T=2, method="at").eval()
    layer = spiking_layers(net)[0]
    layer.record = True
    layer._buffers["running_threshold"] = np.array([0.25, 0.75], np.float32)
    net.forward(dn.encode.direct(np.ones((4, 6), np.float32), 2))
    np.testing.assert_array_equal(layer.cache.theta, [0.25, 0.75])


def test_clear_errors():
    net = dn.models.mlp([6, 8, 3], T=2)
    with pytest.raises(ValueError, match="T=2 steps, but the input has T=3"):
        net.forward(dn.encode.direct(np.ones((4, 6), np.float32), 3))
    with pytest.raises(TypeError, match="dtype float64 differs"):
        net.forward(dn.encode.direct(np.ones((4, 6)), 2))
    with pytest.raises(ValueError, match="does not fit a weight"):
        net.forward(dn.encode.direct(np.ones((4, 7), np.float32), 2))
    with pytest.raises(ValueError, match="encode static data"):
        dn.models.cnn((1, 8, 8), (4,), T=2).forward(np.ones((4, 1, 8, 8), np.float32))
    state = net.state_dict()
    with pytest.raises(ValueError, match=r"state dict does not fit this model \(another "
                                         r"architecture, method or T\?\): missing \['3.running_threshold'\], "
                                         r"unexpected \[\]"):
        net.load_state_dict({k: v for k, v in state.items() if "running_threshold" not in k})
    bad = dict(state, **{"1.weight": np.zeros((3, 3), np.float32)})
    with pytest.raises(ValueError, match=r"state dict entry '1.weight' has shape \(3, 3\), the "
                                         r"model expects \(8, 6\): was it saved from another "
                                         r"architecture or another T\?"):
        net.load_state_dict(bad)
    with pytest.raises(ValueError, match="unknown method"):
        dn.models.mlp([6, 3], method="dsatgo")
    with pytest.raises(TypeError, match="unknown option"):
        dn.models.mlp([6, 3], f_C=1.0)
    with pytest.raises(ValueError, match="unknown neuron"):
        dn.models.mlp([6, 3], neuron="izhikevich")
    bn = dn.model.BatchNorm(3)
    x = np.ones((2, 4, 3), np.float32)
    bn.forward(x)                                     # training: a cache to differentiate
    bn.eval().forward(x)                              # eval: none, and the old one is dropped
    with pytest.raises(RuntimeError, match=r"BatchNorm.backward needs a forward in training mode "
                                           r"first \(eval mode keeps no cache\): call "
                                           r"net.train\(\), then net.forward\(x\), then "
                                           r"net.backward\(dout\)"):
        bn.backward(x)


def test_corrupt_checkpoint(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="corrupt"):
        dn.checkpoint.load_npz(path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        dn.checkpoint.load_npz(tmp_path / "none.npz")


@pytest.fixture(scope="module")
def digits():
    sk = pytest.importorskip("sklearn.datasets")
    d = sk.load_digits()
    x, y = (d.data / 16).astype(np.float32), d.target
    p = np.random.default_rng(0).permutation(len(y))
    return x[p][:1400], y[p][:1400], x[p][1400:], y[p][1400:]


@pytest.mark.parametrize("method", dn.METHODS)
def test_every_method_learns_digits(digits, method):
    xtr, ytr, xte, yte = digits
    net = dn.models.mlp([64, 128, 10], T=4, method=method, seed=0)
    opt = dn.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    first = None
    for epoch in range(2):
        order = np.random.default_rng(epoch).permutation(len(ytr))
        for i in range(0, len(ytr), 50):
            b = order[i:i + 50]
            loss, dout = dn.losses.cross_entropy(net.train().forward(dn.encode.direct(xtr[b], 4)), ytr[b])
            first = float(loss) if first is None else first
            net.zero_grad()
            net.backward(dout)
            opt.step()
    acc = dn.losses.accuracy(net.eval().forward(dn.encode.direct(xte, 4)), yte)
    assert float(loss) < 0.5 * first
    assert acc > 0.85, f"{method}: test accuracy {acc:.3f} (chance is 0.1)"


def test_repr_lists_layers_and_options():
    text = repr(dn.models.mlp([6, 8, 3], T=2, method="tgo", neuron="plif"))
    assert "Linear(weight=(8, 6))" in text
    assert "Spiking(plif, T=2, method='tgo', width='threshold', f_c=1.0, lam=learnable)" in text
    text = repr(dn.models.mlp([6, 8, 3], T=2, lam=0.25, f_c=2.0))
    assert "Spiking(lif, T=2, method='ds-atgo', width='threshold', f_c=2.0, lam=0.25)" in text


@pytest.mark.parametrize("method,momentum", [("at", 0.1), ("ds-atgo", 0.35)])
def test_running_threshold_is_the_momentum_average_of_the_thresholds_used(method, momentum):
    """What the model itself stores after several training forwards is
    R <- (1 - m) R + m theta[t], step by step, from R = V_th = 1, with the theta[t] that
    each forward used (recorded in its cache): the one rule, threshold.update_running."""
    rng = np.random.default_rng(7)
    net = dn.models.mlp([6, 8, 3], T=3, method=method, momentum=momentum, dtype="float64", seed=0)
    layer = spiking_layers(net)[0]
    expect = np.ones(3)
    for _ in range(4):
        net.forward(rng.normal(1.0, 2.0, size=(3, 5, 6)))
        theta = layer.cache.theta.copy()
        assert not np.allclose(theta, expect)                 # the update has work to do
        expect = (1 - momentum) * expect + momentum * theta   # by hand
        np.testing.assert_allclose(layer._buffers["running_threshold"], expect, rtol=1e-14)
    net.eval()
    layer.record = True
    net.forward(rng.normal(size=(3, 5, 6)))
    np.testing.assert_allclose(layer.cache.theta, expect, rtol=1e-14)   # and eval uses it
