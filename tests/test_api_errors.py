"""Named errors, with the fix in the message, where the Python API used to fail deep inside
NumPy or, worse, to carry on: losses, encodings and optimiser options."""
import math

import numpy as np
import pytest

import dsatgo_np as dn

OUT = np.random.default_rng(0).standard_normal((4, 3, 10)).astype(np.float32)   # [T, B, K]


@pytest.mark.parametrize("loss", [dn.losses.cross_entropy, dn.losses.mse, dn.losses.accuracy])
@pytest.mark.parametrize("labels, error, message", [
    (np.array([0, -1, 2]), ValueError, r"class indices in \[0, 10\), got values from -1 to 2"),
    (np.array([0, 10, 2]), ValueError, r"class indices in \[0, 10\), got values from 0 to 10"),
    (np.array([0.0, 1.0, 2.0]), TypeError, "integer class indices, got dtype float64"),
    ([0, 1, 2], TypeError, r"got a list: pass np.asarray"),
    (np.array([0, 1]), ValueError, "do not match a batch of 3"),
])
def test_bad_labels_are_named(loss, labels, error, message):
    with pytest.raises(error, match=message):
        loss(OUT, labels)


def test_label_minus_one_is_not_the_last_class():
    """On the old code, label -1 indexed class K-1 and gave a finite loss."""
    with pytest.raises(ValueError, match="got values from -1"):
        dn.losses.cross_entropy(OUT, np.array([9, -1, 0]))
    loss, _ = dn.losses.cross_entropy(OUT, np.array([9, 9, 0]))
    assert math.isfinite(float(loss))                 # the valid neighbour still works


@pytest.mark.parametrize("loss", [dn.losses.cross_entropy, dn.losses.mse])
def test_a_batch_of_zero_samples(loss):
    with pytest.raises(ValueError, match="at least one step, sample and class"):
        loss(np.zeros((4, 0, 10), np.float32), np.zeros(0, np.int64))


@pytest.mark.parametrize("smoothing", [float("nan"), -0.1, 1.0])
def test_label_smoothing_out_of_range(smoothing):
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
        dn.losses.cross_entropy(OUT, np.array([0, 1, 2]), smoothing)


@pytest.mark.parametrize("encode", [dn.encode.direct,
                                    lambda x, T: dn.encode.poisson(x, T, np.random.default_rng(0))])
def test_encodings_refuse_empty_batches_non_finite_values_and_bad_T(encode):
    with pytest.raises(ValueError, match="at least one sample"):
        encode(np.zeros((0, 1, 8, 8), np.float32), 4)
    x = np.full((2, 1, 8, 8), 0.5, np.float32)
    for bad in (np.nan, np.inf):
        y = x.copy()
        y[1, 0, 3, 3] = bad
        with pytest.raises(ValueError, match="non-finite values"):
            encode(y, 4)
    for T in (0, -1, 2.5):
        with pytest.raises(ValueError, match="T must be a positive integer"):
            encode(x, T)
    with pytest.raises(TypeError, match="must be an array"):
        encode([[0.5]], 4)
    assert encode(x, 3).shape == (3, 2, 1, 8, 8)


def test_poisson_takes_probabilities_0_and_1_as_never_and_always():
    """A pixel at 0 never fires, a pixel at 1 (white, after x / 255) fires at every step."""
    x = np.array([[0.0, 1.0, 1.0, 0.0]], np.float32)
    spikes = dn.encode.poisson(x, 5, np.random.default_rng(0))
    np.testing.assert_array_equal(spikes, np.broadcast_to(x, (5, 1, 4)))


def test_poisson_needs_probabilities():
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        dn.encode.poisson(np.full((2, 3), 1.5, np.float32), 4, np.random.default_rng(0))


def params():
    return dn.models.mlp([4, 3, 2], T=2).parameters()


@pytest.mark.parametrize("make, message", [
    (lambda p: dn.optim.Adam(p, lr=-1e-3), "Adam: lr must be positive and finite"),
    (lambda p: dn.optim.Adam(p, lr=float("nan")), "Adam: lr must be"),
    (lambda p: dn.optim.Adam(p, betas=(0.9, 1.0)), r"Adam: beta2 must be in \[0, 1\)"),
    (lambda p: dn.optim.Adam(p, betas=(-0.1, 0.9)), r"Adam: beta1 must be in \[0, 1\)"),
    (lambda p: dn.optim.Adam(p, eps=0.0), "Adam: eps must be a positive"),
    (lambda p: dn.optim.Adam(p, weight_decay=float("inf")), "Adam: weight_decay must be"),
    (lambda p: dn.optim.SGD(p, lr=float("nan")), "SGD: lr must be positive and finite"),
    (lambda p: dn.optim.SGD(p, lr=0.0), "SGD: lr must be"),
    (lambda p: dn.optim.SGD(p, lr=0.1, momentum=-1), r"SGD: momentum must be in \[0, 1\)"),
    (lambda p: dn.optim.SGD(p, lr=0.1, momentum=float("nan")), "SGD: momentum must be"),
    (lambda p: dn.optim.SGD(p, lr=0.1, weight_decay=-1e-4), "SGD: weight_decay must be"),
    (lambda p: dn.optim.SGD(p, lr=0.1, nesterov=True), "^SGD: nesterov=True needs a momentum > 0$"),
    (lambda p: dn.optim.SGD([], lr=0.1), "no parameters to optimise"),
])
def test_optimiser_options_are_checked(make, message):
    with pytest.raises(ValueError, match=message):
        make(params())


def test_optimiser_option_of_the_wrong_type():
    with pytest.raises(TypeError, match="lr must be a number"):
        dn.optim.SGD(params(), lr="fast")


def test_valid_edges_are_accepted():
    dn.optim.SGD(params(), lr=1e-8, momentum=0.0, weight_decay=0.0)
    dn.optim.Adam(params(), lr=1e-3, betas=(0.0, 0.0), eps=1e-12)


@pytest.mark.usefixtures("each_kernel_set")
@pytest.mark.parametrize("x_shape, w_shape, message", [
    ((2, 3, 5, 5), (4, 3, 3), r"weight of shape \[F, C, KH, KW\], got shape \(4, 3, 3\)"),
    ((3, 5, 5), (4, 3, 3, 3), r"x of shape \[N, C, H, W\], got shape \(3, 5, 5\)"),
])
def test_conv2d_names_a_wrong_number_of_dimensions(x_shape, w_shape, message):
    """A 3-D weight or input is refused with its shape and the layout expected."""
    x, w = np.zeros(x_shape, np.float32), np.zeros(w_shape, np.float32)
    with pytest.raises(ValueError, match=message):
        dn.kernels.of(x).conv2d_forward(x, w, None, stride=1, padding=1)
