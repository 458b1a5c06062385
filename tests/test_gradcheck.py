"""The checker itself: it must pass correct gradients and catch a planted 1 % error."""
import numpy as np
import pytest

from dsatgo_np import layers
from dsatgo_np.gradcheck import GradientCheckError, check_backward, numerical_vjp, rel_error


def _linear_case():
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
    out, cache = layers.linear_forward(x, w)
    dout = rng.normal(size=out.shape)
    dx, grads = layers.linear_backward(dout, cache)
    return x, w, dout, dx, grads


def test_checker_passes_a_correct_gradient():
    x, w, dout, dx, grads = _linear_case()
    errs = check_backward(lambda x, weight: layers.linear_forward(x, weight)[0],
                          {"x": x, "weight": w}, dout, {"x": dx, "weight": grads["weight"]})
    assert max(errs.values()) < 1e-7


@pytest.mark.parametrize("which", ["x", "weight"])
def test_checker_catches_a_planted_one_percent_error(which):
    x, w, dout, dx, grads = _linear_case()
    analytic = {"x": dx, "weight": grads["weight"]}
    analytic[which] = analytic[which] * 1.01
    with pytest.raises(GradientCheckError, match=which):
        check_backward(lambda x, weight: layers.linear_forward(x, weight)[0],
                       {"x": x, "weight": w}, dout, analytic)


def test_checker_catches_a_single_wrong_entry():
    x, w, dout, dx, grads = _linear_case()
    bad = dx.copy()
    bad[2, 1] *= 1.01
    with pytest.raises(GradientCheckError):
        check_backward(lambda x: layers.linear_forward(x, w)[0], {"x": x}, dout, {"x": bad})


def test_numerical_vjp_leaves_input_untouched_and_needs_float64():
    x = np.arange(6.0).reshape(2, 3)
    before = x.copy()
    g = numerical_vjp(lambda v: v ** 2, x, np.ones_like(x))
    np.testing.assert_allclose(g, 2 * x, atol=1e-6)
    np.testing.assert_array_equal(x, before)
    with pytest.raises(TypeError, match="float64"):
        numerical_vjp(lambda v: v, x.astype(np.float32), np.ones((2, 3), np.float32))


def test_rel_error():
    assert rel_error(np.ones(3), np.ones(3)) == 0
    assert rel_error(np.array([1.0]), np.array([1.02])) == pytest.approx(0.02 / 2.02)
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.ones(2), np.ones(3))
