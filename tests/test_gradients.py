"""Every hand-written backward against finite differences, float64, hypothesis-drawn shapes.

Spiking layers are checked in smooth mode (the window's primitive fires instead of the step),
with thresholds and widths held fixed by replaying the recorded ones, and with inputs whose
potentials stay away from the primitive's kinks at theta +- k/2.
"""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dsatgo_np import layers, losses
from dsatgo_np.gradcheck import check_backward
from dsatgo_np.neuron import METHODS, SpikeConfig, lif_backward, lif_forward, make_rule, replay_rule

FAST = settings(max_examples=25, deadline=None)
seeds = st.integers(0, 2**31 - 1)


def away_from_kinks(c, margin=1e-4):
    """True when no potential sits within margin of the primitive's kinks."""
    shape = (-1,) + (1,) * (c.H.ndim - 1)
    d = np.abs(c.H - c.theta.reshape(shape))
    return np.all(np.abs(d - 0.5 * c.k.reshape(shape)) > margin)


@FAST
@given(seed=seeds, T=st.integers(1, 4), B=st.integers(1, 3), N=st.integers(2, 5),
       method=st.sampled_from(METHODS), detach_reset=st.booleans(),
       lam=st.floats(0.05, 0.95))
def test_lif_sequence_backward(seed, T, B, N, method, detach_reset, lam):
    rng = np.random.default_rng(seed)
    X = rng.normal(0.6, 1.0, (T, B, N))
    lam = np.asarray(lam)
    cfg = SpikeConfig(method=method, smooth=True)
    S, c = lif_forward(X, lam, make_rule(cfg, lam, True, g=np.float64(1.3)), smooth=True,
                       detach_reset=detach_reset)
    assume(away_from_kinks(c))
    rule = replay_rule(c.theta, c.k)                                 # theta, k held fixed
    dS = rng.normal(size=S.shape)
    dX, dlam = lif_backward(dS, c)

    def f(X, lam):
        if not detach_reset:
            return lif_forward(X, lam, rule, smooth=True)[0]
        # A stop-gradient is not a function of X: write the detached forward out, with the
        # spikes of the reset replaced by the recorded constants.
        out, v = np.empty_like(X), np.zeros_like(X[0])
        for t in range(X.shape[0]):
            h = lam * v + X[t]
            out[t] = np.clip((h - c.theta[t]) / c.k[t] + 0.5, 0, 1)
            v = h * (1 - c.S[t])
        return out
    check_backward(f, {"X": X, "lam": lam}, dS, {"X": dX, "lam": dlam})


@FAST
@given(seed=seeds, T=st.integers(1, 3), B=st.integers(1, 3), N=st.integers(2, 6),
       f_c=st.floats(0.6, 1.6), estimated_width=st.booleans())
def test_threshold_gradient_extension(seed, T, B, N, f_c, estimated_width):
    """theta = f_c (mu + sigma) differentiated through mean and std (DERIVATIONS.md section 5)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0.3, 1.0, (T, B, N))
    lam = np.asarray(0.3)
    k0 = 2.5 if estimated_width else 1.0                  # wide windows: more of H in them
    cfg = SpikeConfig(method="at", f_c=f_c, k0=k0, smooth=True, threshold_grad=True)

    def f(X):
        return lif_forward(X, lam, make_rule(cfg, lam, True), smooth=True,
                           threshold_grad=True, f_c=f_c)[0]
    S, c = lif_forward(X, lam, make_rule(cfg, lam, True), smooth=True, threshold_grad=True, f_c=f_c)
    assume(away_from_kinks(c, 1e-3))
    dS = rng.normal(size=S.shape)
    dX, _ = lif_backward(dS, c)
    check_backward(f, {"X": X}, dS, {"X": dX}, tol=1e-5)


@FAST
@given(seed=seeds, N=st.integers(1, 6), I=st.integers(1, 5), O=st.integers(1, 5),
       bias=st.booleans())
def test_linear_backward(seed, N, I, O, bias):
    rng = np.random.default_rng(seed)
    inputs = {"x": rng.normal(size=(N, I)), "weight": rng.normal(size=(O, I))}
    if bias:
        inputs["bias"] = rng.normal(size=O)
    out, cache = layers.linear_forward(**inputs)
    dout = rng.normal(size=out.shape)
    dx, grads = layers.linear_backward(dout, cache)
    check_backward(lambda **kw: layers.linear_forward(**kw)[0], inputs, dout, {"x": dx, **grads})
    assert layers.linear_backward(dout, cache, need_dx=False)[0] is None


@FAST
@given(seed=seeds, N=st.integers(2, 5), C=st.integers(1, 4), spatial=st.sampled_from([(), (3,), (2, 3)]))
def test_batchnorm_backward(seed, N, C, spatial):
    # atol: with two values per channel xhat is +-1 whatever x, so dx is 0 up to round-off
    rng = np.random.default_rng(seed)
    x = rng.normal(1.0, 2.0, (N, C) + spatial)
    gamma, beta = rng.normal(size=C), rng.normal(size=C)
    out, cache, _, _ = layers.batchnorm_forward(x, gamma, beta)
    dout = rng.normal(size=out.shape)
    dx, grads = layers.batchnorm_backward(dout, cache)

    def f(x, gamma, beta):
        return layers.batchnorm_forward(x, gamma, beta)[0]
    check_backward(f, {"x": x, "gamma": gamma, "beta": beta}, dout,
                   {"x": dx, "gamma": grads["weight"], "beta": grads["bias"]}, tol=1e-5, atol=1e-7)


@FAST
@given(seed=seeds, T=st.integers(1, 4), N=st.integers(2, 4), C=st.integers(1, 3),
       spatial=st.sampled_from([(), (3,), (2, 2)]))
def test_batchnorm_backward_static(seed, T, N, C, spatial):
    """BatchNorm over T copies of x0 (direct encoding), run on x0 once: the gradient w.r.t.
    x0 is the sum over t of the returned dx[t], and each dx[t] is the one of the T copies."""
    rng = np.random.default_rng(seed)
    x0 = rng.normal(1.0, 2.0, (N, C) + spatial)
    gamma, beta = rng.normal(size=C), rng.normal(size=C)
    _, cache, _, _ = layers.batchnorm_forward(x0, gamma, beta)
    dout = rng.normal(size=(T, N, C) + spatial)
    dx, grads = layers.batchnorm_backward_static(dout, cache)

    def copies(x0):
        return np.broadcast_to(x0[None], (T,) + x0.shape).reshape((T * N, C) + spatial)

    def f(x0, gamma, beta):
        return layers.batchnorm_forward(copies(x0), gamma, beta)[0].reshape(dout.shape)
    check_backward(f, {"x0": x0, "gamma": gamma, "beta": beta}, dout,
                   {"x0": dx.sum(axis=0), "gamma": grads["weight"], "beta": grads["bias"]},
                   tol=1e-5, atol=1e-7)
    _, full = layers.batchnorm_forward(copies(x0), gamma, beta)[:2]
    dx_full, grads_full = layers.batchnorm_backward(dout.reshape((T * N, C) + spatial), full)
    np.testing.assert_allclose(dx, dx_full.reshape(dx.shape), rtol=1e-9, atol=1e-12)
    for k in grads:
        np.testing.assert_allclose(grads[k], grads_full[k], rtol=1e-9, atol=1e-12)


@FAST
@given(seed=seeds, T=st.integers(1, 4), B=st.integers(1, 4), K=st.integers(2, 5),
       smoothing=st.sampled_from([0.0, 0.1, 0.3]))
def test_cross_entropy_backward(seed, T, B, K, smoothing):
    rng = np.random.default_rng(seed)
    out = rng.normal(size=(T, B, K)) * 3
    y = rng.integers(0, K, B)
    loss, d = losses.cross_entropy(out, y, smoothing)
    check_backward(lambda out: losses.cross_entropy(out, y, smoothing)[0], {"out": out},
                   np.asarray(1.0), {"out": d})


@FAST
@given(seed=seeds, T=st.integers(1, 4), B=st.integers(1, 4), K=st.integers(2, 5))
def test_mse_backward(seed, T, B, K):
    rng = np.random.default_rng(seed)
    out = rng.normal(size=(T, B, K))
    y = rng.integers(0, K, B)
    _, d = losses.mse(out, y)
    check_backward(lambda out: losses.mse(out, y)[0], {"out": out}, np.asarray(1.0), {"out": d})


def test_cross_entropy_matches_definition():
    out = np.array([[[1.0, 2.0, 0.5]], [[3.0, 0.0, 0.5]]])          # T=2, B=1, K=3
    m = out.mean(0)[0]
    p = np.exp(m) / np.exp(m).sum()
    loss, _ = losses.cross_entropy(out, np.array([1]))
    assert float(loss) == pytest.approx(-np.log(p[1]))
    loss_s, _ = losses.cross_entropy(out, np.array([1]), label_smoothing=0.3)
    q = np.full(3, 0.1)
    q[1] += 0.7
    assert float(loss_s) == pytest.approx(-(q * np.log(p)).sum())


@FAST
@given(seed=seeds, p=st.sampled_from([0.1, 0.5]))
def test_dropout_backward(seed, p):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, 2, 4))
    out, keep = layers.dropout_forward(x, p, np.random.default_rng(seed))
    assert np.all((out[0] == 0) == (out[1] == 0))                    # one mask for all steps
    dout = rng.normal(size=x.shape)
    check_backward(lambda x: x * keep, {"x": x}, dout, {"x": layers.dropout_backward(dout, keep)})


def test_error_messages():
    with pytest.raises(ValueError, match="does not fit a weight"):
        layers.linear_forward(np.zeros((2, 3)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="readout as"):
        losses.cross_entropy(np.zeros((2, 3)), np.zeros(2, int))
    with pytest.raises(ValueError, match="labels of shape"):
        losses.cross_entropy(np.zeros((1, 2, 3)), np.zeros(3, int))
