"""Every combination of the spiking options that changes what a network computes, checked end
to end.

The full product method x neuron x width x threshold x threshold_grad x detach_reset has 160
cells; a width, threshold or threshold_grad that a method does not read is refused when the
network is built (neuron.SpikeConfig), which leaves the 52 cells in CELLS: each one's whole
backward matches float64 central differences of its forward (pytest enumerates them; within a
cell hypothesis draws the sizes and the arrays, so a failure shrinks). The network: a small
MLP Flatten -> Linear -> tdBN -> spiking neuron -> Linear readout, in smooth mode (the
window's primitive fires instead of the step, DERIVATIONS.md section 2). The quantities the
method treats as constants of the backward are held at their recorded values in the
finite-difference forward:
- the surrogate width k[t] always;
- the threshold theta[t], except where threshold_grad makes it a function of H[t]: an
  adaptive method (at, ds-atgo) with the measured threshold.
"""
from __future__ import annotations

import contextlib
import itertools
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import dsatgo_np as dn
import dsatgo_np.kernels  # noqa: F401  (dn.kernels, patched in constants_held)
from dsatgo_np.gradcheck import check_backward
from dsatgo_np.model import Spiking
from dsatgo_np.core.neuron import METHODS, THRESHOLDS, WIDTHS

from strategies import FEW, away_from_kinks, labels, spread_array

pytestmark = pytest.mark.usefixtures("each_kernel_set")

NEURONS = ("lif", "plif")
PRODUCT = list(itertools.product(METHODS, NEURONS, WIDTHS, THRESHOLDS, (False, True),
                                 (False, True)))


def applies(cell) -> bool:
    """Does every option of the cell change what its method computes?"""
    method, _, width, threshold, tgrad, _ = cell
    adaptive, dynamic = method in ("at", "ds-atgo"), method in ("tgo", "ds-atgo")
    return ((width == "threshold" or dynamic) and (threshold == "measured" or adaptive)
            and (not tgrad or (adaptive and threshold == "measured")))


CELLS = [c for c in PRODUCT if applies(c)]
REFUSED = [c for c in PRODUCT if not applies(c)]

N_IN, HIDDEN, CLASSES = 3, 4, 2


def cell_id(cell):
    method, neuron, width, threshold, tgrad, detach = cell
    return (f"{method}-{neuron}-{width}-{threshold}"
            f"{'-tgrad' if tgrad else ''}{'-detach' if detach else ''}")


def build(cell, T, seed):
    method, neuron, width, threshold, tgrad, detach = cell
    return dn.models.mlp([N_IN, HIDDEN, CLASSES], T=T, method=method, neuron=neuron, width=width,
                         threshold=threshold, threshold_grad=tgrad, detach_reset=detach,
                         dtype="float64", seed=seed, smooth=True,
                         **({} if method == "mpd-agl" else {"k0": 2.0}))


def theta_is_live(cell) -> bool:
    """Does the method differentiate through theta (so the check must not hold it)?"""
    method, _, _, threshold, tgrad, _ = cell
    return tgrad and method in ("at", "ds-atgo") and threshold == "measured"


def _model_function(name):
    """The function the model calls by this name (patched below)."""
    assert hasattr(dn.spiking, name), (f"dsatgo_np.spiking no longer calls {name}: point this "
                                       "test at the function the model runs")
    return getattr(dn.spiking, name)


@contextlib.contextmanager
def constants_held(net, live_theta: bool, detach_reset: bool):
    """Run the net with its recorded k[t] (and theta[t] unless live_theta) as constants, and
    with detach_reset the recorded spikes in the reset V[t] = H[t] (1 - S[t])."""
    (layer,) = [m for m in net.modules() if isinstance(m, Spiking)]
    theta, k, S = (np.array(a) for a in (layer.cache.theta, layer.cache.k, layer.cache.S))
    with contextlib.ExitStack() as stack:
        if live_theta:                          # theta from the live rule, k replayed
            make_rule = _model_function("make_rule")

            def held_k(*args, **kwargs):
                rule = make_rule(*args, **kwargs)
                rule.width_at = lambda t: k[t]           # a width known before the pass
                return rule
            stack.enter_context(mock.patch.object(dn.spiking, "make_rule", held_k))
        else:                                   # replay both: the model's own mechanism
            layer.hold_thresholds(theta, k)
            stack.callback(layer.hold_thresholds)
        if detach_reset:
            # A stop-gradient is not a function of the input: the forward is written out
            # (smooth spikes, METHOD.md section 2) with the reset's spikes replaced by the
            # recorded constants; the kernel set's own forward still runs for its cache.
            kernels_of = dn.kernels.of

            def reset_held(X, lam, rule, smooth=False, detach_reset=False, *args, **kwargs):
                _, cache = kernels_of(X).lif_forward(X, lam, rule, smooth, detach_reset,
                                                     *args, **kwargs)
                out, v = np.empty_like(X), np.zeros_like(X[0])
                for t in range(X.shape[0]):
                    h = lam * v + X[t]
                    step = rule(h, t)
                    out[t] = np.clip((h - step.theta) / step.k + 0.5, 0.0, 1.0)
                    v = h * (1 - S[t])
                return out, cache

            def with_reset_held(x):
                return SimpleNamespace(**{**vars(kernels_of(x)), "lif_forward": reset_held})
            stack.enter_context(mock.patch.object(dn.kernels, "of", with_reset_held))
        yield


@st.composite
def cases(draw):
    """Sizes, then arrays: input (time-varying or direct-encoded), first weight, labels."""
    T, B = draw(st.integers(1, 3)), draw(st.integers(2, 3))
    static = draw(st.booleans())
    x = draw(spread_array((B, N_IN) if static else (T, B, N_IN), -2.0, 2.0))
    w = draw(spread_array((HIDDEN, N_IN), -1.0, 1.0))
    y = draw(labels(B, CLASSES))
    return T, static, x, w, y


def check_cell(cell, T, static, x, w, y):
    net = build(cell, T, seed=0)
    net[1]._params["weight"].data = w.copy()              # Flatten, Linear, BN, Spiking, Linear
    encode = (lambda v: dn.encode.direct(v, T)) if static else (lambda v: v)
    # Every BatchNorm channel needs a spread: a constant channel divides by sqrt(eps), and
    # its finite differences lose their accuracy (not a fault of the backward).
    assume(np.all((x.reshape(-1, N_IN) @ w.T).std(axis=0) > 0.1))
    loss, dout = dn.losses.cross_entropy(net.forward(encode(x)), y, label_smoothing=0.1)
    (layer,) = [m for m in net.modules() if isinstance(m, Spiking)]
    assume(away_from_kinks(layer.cache.H, layer.cache.theta, layer.cache.k))
    if theta_is_live(cell):
        # theta's derivative carries (H - mu) / sigma: where a step's potentials are nearly
        # equal (sigma ~ 1e-5, an input whose rows repeat) a step of 1e-6 is no longer small
        # against that spread, and the central difference measures curvature, not slope.
        assume(np.all(layer.cache.sigma > 1e-2))
    net.zero_grad()
    dx = net.backward(dout, need_dx=True)
    # Everything the spiking layer's backward reaches: its decay, the tdBN and Linear below it,
    # and the input (the readout's gradient does not pass through the neuron).
    params = {name: p for name, p in net.named_parameters() if not name.startswith("4.")}
    grads = {name: p.grad.copy() for name, p in params.items()}
    grads["input"] = dx.sum(axis=0) if static else dx     # x[t] = x0 at every t
    bad = [name for name, g in grads.items() if not np.all(np.isfinite(g))]
    assert not bad, f"non-finite gradients for {bad}"

    def loss_of(**arrays):
        saved = {name: p.data for name, p in params.items()}
        try:
            for name, p in params.items():
                p.data = arrays[name]
            out = net.forward(encode(arrays["input"]))
            return dn.losses.cross_entropy(out, y, label_smoothing=0.1)[0]
        finally:
            for name, p in params.items():
                p.data = saved[name]

    inputs = {name: p.data.copy() for name, p in params.items()}
    assert set(inputs) >= {"1.weight", "2.weight", "2.bias"}
    inputs["input"] = x.copy()
    with constants_held(net, theta_is_live(cell), detach_reset=cell[5]):
        # h = 1e-6 on O(1) values: truncation ~1e-12, round-off ~1e-10 of the loss's O(1)
        check_backward(loss_of, inputs, np.asarray(1.0), grads, tol=1e-5, atol=1e-8)


@pytest.mark.parametrize("cell", CELLS, ids=cell_id)
@FEW
@given(case=cases())
def test_option_cell(cell, case):
    check_cell(cell, *case)


@pytest.mark.parametrize("cell", REFUSED, ids=cell_id)
def test_an_option_the_method_does_not_read_is_refused(cell):
    method, _, width, threshold, tgrad, _ = cell
    adaptive, dynamic = method in ("at", "ds-atgo"), method in ("tgo", "ds-atgo")
    name, value = next((n, v) for n, v, unread in (
        ("width", width, width != "threshold" and not dynamic),
        ("threshold", threshold, threshold != "measured" and not adaptive),
        ("threshold_grad", tgrad, True)) if unread)         # the first option refused
    with pytest.raises(ValueError, match=f"{name}={value!r} does nothing for method "
                                         f"'{method}'.*leave it at"):
        build(cell, 2, seed=0)


def test_matrix_is_complete():
    """The product spans every value each option accepts (a new option value must join it),
    and the cells that differ are the 52 of the methods' options."""
    assert len(PRODUCT) == len(set(PRODUCT)) == 5 * 2 * 2 * 2 * 2 * 2
    assert {c[0] for c in CELLS} == set(dn.METHODS)
    per_method = {m: sum(c[0] == m for c in CELLS) // 4 for m in dn.METHODS}  # / neuron, detach
    assert per_method == {"vanilla": 1, "at": 3, "tgo": 2, "ds-atgo": 6, "mpd-agl": 1}
    assert len(CELLS) == 52 and len(REFUSED) == 108
