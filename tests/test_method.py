"""Exact unit tests of DS-ATGO's rules (METHOD.md sections 2-5 and 7)."""
import math

import numpy as np
import pytest

from dsatgo_np import surrogate, threshold
from dsatgo_np.core.neuron import METHODS, SpikeConfig, lif_forward, make_rule


def normal_cdf(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_heaviside_tie_fires():
    z = np.array([-1e-12, 0.0, 1e-12])
    assert surrogate.heaviside(z).tolist() == [0.0, 1.0, 1.0]


def test_window_is_derivative_of_primitive():
    h = np.linspace(-2, 2, 401)[:-1] + 0.0037   # grid kept off the kinks at theta +- k/2
    theta, k, eps = 0.3, 0.8, 1e-6
    numeric = (surrogate.primitive(h + eps, theta, k) - surrogate.primitive(h - eps, theta, k)) / (2 * eps)
    np.testing.assert_allclose(numeric, surrogate.window(h, theta, k), atol=1e-8)
    assert surrogate.window(np.array([theta]), theta, k)[0] == pytest.approx(1 / k)


@pytest.mark.parametrize("z", [-3.0, -0.5, 0.0, 0.99, 1.0, 1.01, 2.5, 7.0])
def test_eq7_branches_agree(z):
    one = float(surrogate.dynamic_width(np.float64(z), k0=1.3, v_th=1.0))
    assert one == pytest.approx(surrogate.dynamic_width_two_branches(z, k0=1.3, v_th=1.0), abs=1e-15)
    assert 0 < one < 2 * 1.3


def test_dynamic_width_values():
    assert float(surrogate.dynamic_width(np.float64(1.0))) == 1.0
    assert float(surrogate.dynamic_width(np.float64(0.5))) == pytest.approx(1 + math.tanh(-0.5))
    assert float(surrogate.dynamic_width(np.float64(2.0), k0=2.0)) == pytest.approx(2 * (1 + math.tanh(1.0)))


def test_adaptive_threshold_every_step_uses_mean_plus_std_ddof1():
    rng = np.random.default_rng(1)
    X = rng.normal(0.2, 1.5, (5, 7, 3))
    cfg = SpikeConfig(method="at", f_c=1.3)
    lam = np.float64(0.25)
    S, c = lif_forward(X, lam, make_rule(cfg, lam, training=True))
    v = np.zeros_like(X[0])
    for t in range(5):
        h = lam * v + X[t]
        expected = 1.3 * (h.mean() + h.std(ddof=1))
        assert c.theta[t] == pytest.approx(expected, rel=1e-12)
        assert c.sigma[t] == pytest.approx(np.std(h, ddof=1), rel=1e-12)
        s = (h >= expected).astype(float)
        np.testing.assert_array_equal(S[t], s)
        v = h * (1 - s)


def test_fixed_and_estimated_thresholds():
    X = np.random.default_rng(2).normal(size=(3, 4, 5))
    lam = np.float64(0.2)
    for method, v_th in (("vanilla", 1.0), ("tgo", 1.0), ("mpd-agl", 0.5)):
        _, c = lif_forward(X, lam, make_rule(SpikeConfig(method=method), lam, True, g=np.float64(1)))
        assert np.all(c.theta == v_th)
    cfg = SpikeConfig(method="ds-atgo", threshold="estimated", f_c=0.9)
    _, c = lif_forward(X, lam, make_rule(cfg, lam, True))
    assert np.allclose(c.theta, 0.9 * math.sqrt(1 + 0.04) * 1.0)
    cfg = SpikeConfig(method="at", threshold="estimated", f_c=1.2, v_th=0.5)
    _, c = lif_forward(X, lam, make_rule(cfg, lam, True))
    np.testing.assert_allclose(c.theta, 1.2 * math.sqrt(1.04) * 0.5, rtol=1e-15)   # v_th scales it
    # the defaults are the paper's f_c = 1 and V_th = 1
    assert float(threshold.estimated_threshold(lam)) == pytest.approx(math.sqrt(1.04), rel=1e-15)


def test_width_options():
    X = np.random.default_rng(3).normal(0.4, 2.0, (3, 50, 20))
    lam = np.float64(0.2)
    for width in ("threshold", "std"):
        cfg = SpikeConfig(method="ds-atgo", width=width, f_c=1.2)
        _, c = lif_forward(X, lam, make_rule(cfg, lam, True))
        z = c.theta if width == "threshold" else c.sigma
        np.testing.assert_allclose(c.k, 1 + np.tanh(z - 1.0))
    # vanilla and at: fixed k0; tgo: window width from the measured f_c (mu + sigma), centre v_th
    _, c = lif_forward(X, lam, make_rule(SpikeConfig(method="at", k0=0.7), lam, True))
    assert np.all(c.k == 0.7)
    _, c = lif_forward(X, lam, make_rule(SpikeConfig(method="tgo"), lam, True))
    np.testing.assert_allclose(c.k, 1 + np.tanh(c.mu + c.sigma - 1.0))
    assert np.all(c.theta == 1.0)


def test_mpd_agl_width():
    X = np.random.default_rng(4).normal(size=(3, 4, 5))
    lam, g = np.float64(0.2), np.float64(1.7)
    _, c = lif_forward(X, lam, make_rule(SpikeConfig(method="mpd-agl"), lam, True, g=g))
    assert c.k[0] == pytest.approx(2 * 1.7 * 0.5)
    assert c.k[1] == c.k[2] == pytest.approx(2 * math.sqrt(1.04) * 1.7 * 0.5)
    with pytest.raises(ValueError, match="method 'mpd-agl' needs g, the mean scale of the preceding BatchNorm"):
        make_rule(SpikeConfig(method="mpd-agl"), lam, True)


def test_running_threshold_update_and_eval_modes():
    r = np.ones(3)
    theta = np.array([2.0, 0.5, 1.0])
    np.testing.assert_allclose(threshold.update_running(r, theta, 0.1), [1.1, 0.95, 1.0])
    X = np.random.default_rng(5).normal(size=(3, 6, 4))
    lam = np.float64(0.2)
    running = np.array([0.3, 0.4, 0.5])
    _, c = lif_forward(X, lam, make_rule(SpikeConfig(method="at"), lam, False, running))
    np.testing.assert_array_equal(c.theta, running)
    # without the running average, eval uses the batch's own statistics
    cfg = SpikeConfig(method="at", running=False)
    _, c2 = lif_forward(X, lam, make_rule(cfg, lam, False, running))
    _, c3 = lif_forward(X, lam, make_rule(cfg, lam, True, running))
    np.testing.assert_allclose(c2.theta, c3.theta)


def test_theorem1_fires_15_87_percent():
    rng = np.random.default_rng(6)
    for scale in (0.01, 1.0, 50.0):
        h = rng.normal(3.0 * scale, scale, 2_000_000)
        mu, sigma = threshold.layer_stats(h)
        theta = threshold.adaptive_threshold(mu, sigma)
        rate = surrogate.heaviside(h - theta).mean()
        assert abs(rate - (1 - normal_cdf(1.0))) < 1e-3
    assert 1 - normal_cdf(1.0) == pytest.approx(0.158655, abs=1e-6)


def _inside_share(s, k):
    """Share of H ~ N(0, s^2) inside the window of width k centred on theta = s (exact)."""
    return normal_cdf((s + k / 2) / s) - normal_cdf((s - k / 2) / s)


@pytest.mark.parametrize("s, fixed, dynamic", [(0.5, 47.72, 26.00), (1.0, 24.17, 24.17),
                                               (2.0, 12.10, 21.30)])
def test_fig5_table(s, fixed, dynamic):
    """METHOD.md section 7 from the library's own functions, exactly and by sampling."""
    theta = threshold.adaptive_threshold(0.0, s)                       # mu = 0
    k_dyn = float(surrogate.dynamic_width(np.float64(theta)))
    assert 100 * _inside_share(s, 1.0) == pytest.approx(fixed, abs=0.006)
    assert 100 * _inside_share(s, k_dyn) == pytest.approx(dynamic, abs=0.006)
    h = np.random.default_rng(7).normal(0, s, 1_000_000)
    for k, share in ((1.0, fixed), (k_dyn, dynamic)):
        measured = 100 * (surrogate.window(h, theta, k) > 0).mean()
        assert measured == pytest.approx(share, abs=0.2)


@pytest.mark.parametrize("kw, match", [(dict(method="atgo"), "unknown method"),
                                       (dict(width="sigma"), "unknown width"),
                                       (dict(threshold="guess"), "unknown threshold"),
                                       (dict(f_c=0), "positive"),
                                       (dict(momentum=2), "momentum")])
def test_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        SpikeConfig(**kw)


def test_all_methods_listed():
    assert METHODS == ("vanilla", "at", "tgo", "ds-atgo", "mpd-agl")
