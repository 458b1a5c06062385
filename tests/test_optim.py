"""Optimisers: SGD against its docstring's formulas, and its chunked update against whole arrays."""
import numpy as np
import pytest

import dsatgo_np as dn
from dsatgo_np import optim
from dsatgo_np.model import Parameter


def params(rng, shapes=((5, 7), (3,), (2, 3, 4))):
    ps = [Parameter(rng.normal(size=s)) for s in shapes]
    return ps


@pytest.mark.parametrize("momentum,weight_decay,nesterov",
                         [(0.0, 0.0, False), (0.9, 0.0, False), (0.9, 1e-2, False),
                          (0.9, 1e-2, True), (0.0, 1e-2, False)])
def test_sgd_follows_its_formulas(momentum, weight_decay, nesterov):
    rng = np.random.default_rng(0)
    ps = params(rng)
    expect = [p.data.copy() for p in ps]
    bufs = [None] * len(ps)
    opt = optim.SGD(ps, lr=0.1, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    for _ in range(3):
        grads = [rng.normal(size=p.data.shape) for p in ps]
        for p, g in zip(ps, grads):
            p.grad = g.copy()
        opt.step()
        for i, g in enumerate(grads):                 # torch.optim.SGD's documented update
            g = g + weight_decay * expect[i]
            if momentum:
                bufs[i] = g if bufs[i] is None else momentum * bufs[i] + g
                g = g + momentum * bufs[i] if nesterov else bufs[i]
            expect[i] = expect[i] - 0.1 * g
        for p, e in zip(ps, expect):
            np.testing.assert_allclose(p.data, e, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("nesterov,weight_decay", [(False, 0.0), (True, 1e-3)])
def test_sgd_in_chunks_is_the_whole_array_update_bit_for_bit(monkeypatch, nesterov, weight_decay):
    results = []
    for chunk in (7, 1 << 30):                        # many pieces (with a partial one), one piece
        monkeypatch.setattr(optim, "CHUNK", chunk)
        rng = np.random.default_rng(1)
        ps = [Parameter(rng.normal(size=s).astype(np.float32)) for s in ((9, 10), (13,))]
        opt = optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=weight_decay, nesterov=nesterov)
        for _ in range(3):
            for p in ps:
                p.grad = rng.normal(size=p.data.shape).astype(np.float32)
            opt.step()
        results.append([p.data.copy() for p in ps] + [b.copy() for b in opt.buffers])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_sgd_updates_a_non_contiguous_parameter_in_place():
    data = np.arange(12.0).reshape(3, 4).T             # a transposed view
    p = Parameter(data)
    p.grad = np.ones_like(data)
    dn.optim.SGD([p], lr=0.5, momentum=0.9).step()
    np.testing.assert_array_equal(data, np.arange(12.0).reshape(3, 4).T - 0.5)
