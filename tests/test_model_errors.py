"""Named errors for the misuses of the model's API that used to surface as raw NumPy errors."""
import numpy as np
import pytest

import dsatgo_np as dn
from dsatgo_np.model import (AvgPool2d, BatchNorm, Conv2d, Flatten, GlobalAvgPool, Linear,
                             MaxPool2d, Spiking)
from dsatgo_np.core.neuron import SpikeConfig


@pytest.mark.parametrize("make", [lambda: Linear(3, 2), lambda: Conv2d(1, 2, padding=1),
                                  lambda: BatchNorm(2), lambda: Spiking(2),
                                  lambda: AvgPool2d(), lambda: MaxPool2d(),
                                  lambda: GlobalAvgPool(), lambda: Flatten()])
def test_backward_before_forward_names_the_fix(make):
    with pytest.raises(RuntimeError, match="needs a forward"):
        make().backward(np.ones((2, 2, 2), np.float32))


def test_a_network_backward_before_forward_names_the_fix():
    net = dn.models.mlp([4, 3, 2], T=2)
    with pytest.raises(RuntimeError, match="needs a forward"):
        net.backward(np.ones((2, 5, 2), np.float32))


@pytest.mark.parametrize("make, name", [
    (lambda: Linear(0, 3), "n_in"), (lambda: Linear(3, -1), "n_out"),
    (lambda: Linear(2.5, 3), "n_in"), (lambda: Conv2d(0, 3), "c_in"),
    (lambda: Conv2d(1, 3, stride=0), "stride"), (lambda: BatchNorm(0), "channels"),
    (lambda: Spiking(0), "T"),
    (lambda: dn.models.mlp([784, 0, 10]), "whole number >= 1, got 0")])
def test_sizes_below_one_are_refused_by_name(make, name):
    with pytest.raises(ValueError, match=name):
        make()


@pytest.mark.parametrize("neuron, lam", [("plif", 0.0), ("plif", 1.0), ("lif", 2.0),
                                         ("lif", -0.1), ("plif", float("nan"))])
def test_a_decay_out_of_range_is_refused(neuron, lam):
    with pytest.raises(ValueError, match="lam"):
        Spiking(2, neuron=neuron, lam=lam)


def test_the_decays_at_the_edges_of_their_ranges_are_accepted():
    for neuron, lam in (("lif", 0.0), ("lif", 1.0), ("plif", 0.5)):
        s = Spiking(2, neuron=neuron, lam=lam)
        assert float(s.decay(np, np.float64)) == pytest.approx(lam)


@pytest.mark.parametrize("field, value", [("f_c", float("nan")), ("f_c", 0.0), ("f_c", -1.0),
                                          ("k0", float("inf")), ("v_th", float("nan")),
                                          ("momentum", 1.5), ("momentum", float("nan"))])
def test_spiking_options_must_be_finite_and_in_range(field, value):
    with pytest.raises(ValueError, match=field):
        SpikeConfig(**{field: value})


def test_load_state_dict_refuses_complex_arrays_instead_of_dropping_their_imaginary_part():
    net = dn.models.mlp([4, 3, 2], T=2)
    state = net.state_dict()
    key = next(iter(state))
    state[key] = state[key].astype(np.complex64) + 1j
    with pytest.raises(TypeError, match="complex"):
        net.load_state_dict(state)


def test_load_state_dict_still_takes_real_arrays_of_another_dtype():
    net = dn.models.mlp([4, 3, 2], T=2)
    state = {k: v.astype(np.float64) for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    assert all(v.dtype == np.float32 for v in net.state_dict().values())
