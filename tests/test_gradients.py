"""Every hand-written backward against finite differences, float64, hypothesis-drawn arrays.

Each test runs on both kernel sets (the fast CPU kernels and the plain core, through the
`each_kernel_set` fixture and kernels.of), and hypothesis draws the arrays themselves
(tests/strategies.py), so a failure shrinks to a small array.

Spiking layers are checked in smooth mode (the window's primitive fires instead of the step),
with thresholds and widths held fixed by replaying the recorded ones, and with inputs whose
potentials stay away from the primitive's kinks at theta +- k/2.
"""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from dsatgo_np import kernels, layers, losses
from dsatgo_np.gradcheck import GradientCheckError, check_backward
from dsatgo_np.core.neuron import METHODS, SpikeConfig, make_rule, replay_rule

from strategies import FAST, array, away_from_kinks, fd_atol, floats, labels, spread_array

pytestmark = pytest.mark.usefixtures("each_kernel_set")

dims = st.integers


def K(x):
    """The kernel table the model would use for x (fast or plain, as the fixture set it)."""
    return kernels.of(x)


def smooth_detached(X, lam, rule, S_reset):
    """The smooth forward with the reset's spikes replaced by the constants S_reset: what
    detach_reset differentiates (a stop-gradient is not a function of X)."""
    out, v = np.empty_like(X), np.zeros_like(X[0])
    for t in range(X.shape[0]):
        h = lam * v + X[t]
        step = rule(h, t)
        out[t] = np.clip((h - step.theta) / step.k + 0.5, 0, 1)
        v = h * (1 - S_reset[t])
    return out


@st.composite
def lif_case(draw, T=(1, 4), B=(1, 3), N=(2, 5), lo=-1.4, hi=2.6):
    shape = (draw(dims(*T)), draw(dims(*B)), draw(dims(*N)))
    X = draw(spread_array(shape, lo, hi))
    dS = draw(array(shape, -2.0, 2.0))
    return X, dS


@FAST
@given(case=lif_case(), method=st.sampled_from(METHODS), detach_reset=st.booleans(),
       lam=floats(0.05, 0.95))
def test_lif_sequence_backward(case, method, detach_reset, lam):
    X, dS = case
    lam = np.asarray(lam)
    cfg = SpikeConfig(method=method, smooth=True)
    S, c = K(X).lif_forward(X, lam, make_rule(cfg, lam, True, g=np.float64(1.3)), smooth=True,
                            detach_reset=detach_reset)
    assume(away_from_kinks(c.H, c.theta, c.k))
    rule = replay_rule(c.theta, c.k)                                 # theta, k held fixed
    dX, dlam = K(X).lif_backward(dS, c)

    def f(X, lam):
        if detach_reset:
            return smooth_detached(X, lam, rule, c.S)
        return K(X).lif_forward(X, lam, rule, smooth=True)[0]
    check_backward(f, {"X": X, "lam": lam}, dS, {"X": dX, "lam": dlam}, atol=fd_atol(S, dS))
    dX_only, none = K(X).lif_backward(dS, c, need_dlam=False)
    assert none is None
    np.testing.assert_array_equal(dX_only, dX)


@FAST
@given(case=lif_case(T=(1, 3), N=(2, 6), lo=-1.5, hi=2.5), method=st.sampled_from(["at", "ds-atgo"]),
       width=st.sampled_from(["threshold", "std"]), f_c=floats(0.6, 1.6), wide=st.booleans(),
       detach_reset=st.booleans(), lam=floats(0.1, 0.6))
def test_threshold_gradient_extension(case, method, width, f_c, wide, detach_reset, lam):
    """theta = f_c (mu + sigma) differentiated through mean and std (DERIVATIONS.md section 6),
    for dX and dlam (H[t] depends on lam through V[t-1], and theta[t] on H[t]).

    The width k stays a constant of the backward (under ds-atgo it is a function of the
    statistics too), so the finite-difference forward replays the recorded k with a live theta.
    """
    X, dS = case
    lam = np.asarray(lam)
    k0 = 2.5 if wide else 1.0                              # wide windows: more of H in them
    width = width if method == "ds-atgo" else "threshold"  # at has no dynamic width to read
    cfg = SpikeConfig(method=method, width=width, f_c=f_c, k0=k0, smooth=True, threshold_grad=True)
    rule = make_rule(cfg, lam, True)
    assert rule.theta_depends_on_h
    S, c = K(X).lif_forward(X, lam, rule, smooth=True, detach_reset=detach_reset,
                            threshold_grad=True, f_c=f_c)
    assume(away_from_kinks(c.H, c.theta, c.k, 1e-3))
    assume(np.all(c.sigma > 0.05))                         # dsigma/dH divides by sigma

    def live_theta(h, t, stats=None):
        return rule(h, t, stats)._replace(k=c.k[t])
    live_theta.measures = True
    dX, dlam = K(X).lif_backward(dS, c)

    def f(X, lam):
        if detach_reset:
            return smooth_detached(X, lam, live_theta, c.S)
        return K(X).lif_forward(X, lam, live_theta, smooth=True)[0]
    check_backward(f, {"X": X, "lam": lam}, dS, {"X": dX, "lam": dlam}, tol=1e-5,
                   atol=fd_atol(S, dS))
    # The same network without the extension misses the threshold's term.
    S0, c0 = K(X).lif_forward(X, lam, rule, smooth=True, detach_reset=detach_reset, f_c=f_c)
    dX0, _ = K(X).lif_backward(dS, c0)
    dtheta = [-(dS[t] * (np.abs(c.H[t] - c.theta[t]) < c.k[t] / 2) / c.k[t]).sum() for t in range(len(X))]
    if abs(dtheta[-1]) > 1e-3:      # the last step's dS~ is dS: a term that cannot cancel
        assert not np.allclose(dX0[-1], dX[-1], rtol=1e-6, atol=1e-9)


@st.composite
def linear_case(draw):
    N, I, O = draw(dims(1, 6)), draw(dims(1, 5)), draw(dims(1, 5))
    inputs = {"x": draw(array((N, I))), "weight": draw(array((O, I)))}
    if draw(st.booleans()):
        inputs["bias"] = draw(array((O,)))
    return inputs, draw(array((N, O)))


@FAST
@given(case=linear_case())
def test_linear_backward(case):
    inputs, dout = case
    out, cache = K(inputs["x"]).linear_forward(**inputs)
    dx, grads = K(dout).linear_backward(dout, cache)
    assert set(grads) == ({"weight", "bias"} if "bias" in inputs else {"weight"})
    check_backward(lambda **kw: K(kw["x"]).linear_forward(**kw)[0], inputs, dout, {"x": dx, **grads},
                   atol=fd_atol(out, dout))
    assert K(dout).linear_backward(dout, cache, need_dx=False)[0] is None


@st.composite
def batchnorm_case(draw, lead=(2, 5)):
    shape = tuple(draw(dims(*lead)) for _ in range(len(lead) // 2))
    C, spatial = draw(dims(1, 4)), draw(st.sampled_from([(), (3,), (2, 3)]))
    x = draw(spread_array(shape + (C,) + spatial, -3.0, 5.0, min_std=0.5, axis=len(shape)))
    gamma, beta = draw(array((C,), 0.2, 2.0)), draw(array((C,)))
    return x, gamma, beta, spatial


@FAST
@given(case=batchnorm_case(), data=st.data())
def test_batchnorm_backward(case, data):
    # atol: with two values per channel xhat is +-1 whatever x, so dx is 0 up to round-off
    x, gamma, beta, _ = case
    out, cache, _, _ = K(x).batchnorm_forward(x, gamma, beta)
    dout = data.draw(array(out.shape))
    dx, grads = K(x).batchnorm_backward(dout, cache)

    def f(x, gamma, beta):
        return K(x).batchnorm_forward(x, gamma, beta)[0]
    check_backward(f, {"x": x, "gamma": gamma, "beta": beta}, dout,
                   {"x": dx, "gamma": grads["weight"], "beta": grads["bias"]}, tol=1e-5,
                   atol=fd_atol(out, dout))


@FAST
@given(case=batchnorm_case(), T=dims(1, 4), data=st.data())
def test_batchnorm_backward_static(case, T, data):
    """BatchNorm over T copies of x0 (direct encoding), run on x0 once: the gradient w.r.t.
    x0 is the sum over t of the returned dx[t], and each dx[t] is the one of the T copies."""
    x0, gamma, beta, spatial = case
    N, C = x0.shape[:2]
    bn = K(x0)
    out, cache, _, _ = bn.batchnorm_forward(x0, gamma, beta)
    dout = data.draw(array((T, N, C) + spatial))
    dx, grads = bn.batchnorm_backward_static(dout, cache)

    def copies(x0):
        return np.broadcast_to(x0[None], (T,) + x0.shape).reshape((T * N, C) + spatial)

    def f(x0, gamma, beta):
        return bn.batchnorm_forward(copies(x0), gamma, beta)[0].reshape(dout.shape)
    check_backward(f, {"x0": x0, "gamma": gamma, "beta": beta}, dout,
                   {"x0": dx.sum(axis=0), "gamma": grads["weight"], "beta": grads["bias"]},
                   tol=1e-5, atol=fd_atol(out[None], dout))
    _, full = bn.batchnorm_forward(copies(x0), gamma, beta)[:2]
    dx_full, grads_full = bn.batchnorm_backward(dout.reshape((T * N, C) + spatial), full)
    # both sum the same T * N * L terms of size ~10 in another order
    np.testing.assert_allclose(dx, dx_full.reshape(dx.shape), rtol=1e-9, atol=1e-12)
    for k in grads:
        np.testing.assert_allclose(grads[k], grads_full[k], rtol=1e-9, atol=1e-12)


@st.composite
def readout_case(draw, scale=6.0):
    T, B, K_ = draw(dims(1, 4)), draw(dims(1, 4)), draw(dims(2, 5))
    return draw(array((T, B, K_), -scale, scale)), draw(labels(B, K_))


@FAST
@given(case=readout_case(), smoothing=st.sampled_from([0.0, 0.1, 0.3]))
def test_cross_entropy_backward(case, smoothing):
    out, y = case
    loss, d = losses.cross_entropy(out, y, smoothing)
    check_backward(lambda out: losses.cross_entropy(out, y, smoothing)[0], {"out": out},
                   np.asarray(1.0), {"out": d}, atol=fd_atol(out, 1.0))


@FAST
@given(case=readout_case(scale=2.0))
def test_mse_backward(case):
    out, y = case
    _, d = losses.mse(out, y)
    check_backward(lambda out: losses.mse(out, y)[0], {"out": out}, np.asarray(1.0), {"out": d},
                   atol=fd_atol(out * out, 1.0))


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


def test_mse_matches_definition():
    out = np.array([[[1.0, 2.0]], [[3.0, 0.0]]])                    # T=2, B=1, K=2: m = [2, 1]
    loss, d = losses.mse(out, np.array([1]))
    assert float(loss) == pytest.approx(((2 - 0) ** 2 + (1 - 1) ** 2) / 2)
    np.testing.assert_allclose(d, np.array([[[2.0, 0.0]], [[2.0, 0.0]]]) / 2)   # 2 (m - y) / (B K T)


@FAST
@given(x=array((3, 2, 4)), dout=array((3, 2, 4)), p=st.sampled_from([0.1, 0.5]), seed=dims(0, 3))
def test_dropout_backward(x, dout, p, seed):
    out, keep = layers.dropout_forward(x, p, np.random.default_rng(seed))
    assert keep.shape == x.shape[1:]                                 # one mask per sample
    assert np.all((keep == 0) | (keep == 1 / (1 - p)))
    np.testing.assert_array_equal(out, x * keep)                     # shared by all steps
    check_backward(lambda x: x * keep, {"x": x}, dout, {"x": layers.dropout_backward(dout, keep)},
                   atol=fd_atol(out, dout))


def test_checker_refuses_non_finite_gradients():
    """A NaN gradient is a failure (finding it is the point of the check), not a pass."""
    x = np.array([1.0, 2.0])
    with pytest.raises(GradientCheckError):
        check_backward(lambda x: 2 * x, {"x": x}, np.ones(2), {"x": np.array([2.0, np.nan])})


def test_error_messages():
    with pytest.raises(ValueError, match="does not fit a weight"):
        K(np.zeros(1)).linear_forward(np.zeros((2, 3)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="readout as"):
        losses.cross_entropy(np.zeros((2, 3)), np.zeros(2, int))
    with pytest.raises(ValueError, match="labels of shape"):
        losses.cross_entropy(np.zeros((1, 2, 3)), np.zeros(3, int))
