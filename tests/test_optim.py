"""Optimisers: SGD against its docstring's formulas, and its chunked update against whole arrays."""
import numpy as np
import pytest

import dsatgo_np as dn
from dsatgo_np import kernels, optim
from dsatgo_np.fast import optim as fast_optim
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
    """A contiguous NumPy parameter is updated in pieces of CHUNK values (90 = 12 * 7 + 6 and
    13 = 7 + 6: 15 pieces a step), with the same bits as one whole-array update."""
    results, pieces = [], []
    real_update = fast_optim.sgd_update_whole

    def counted(p, *rest):
        pieces.append(p.size)
        return real_update(p, *rest)
    monkeypatch.setattr(fast_optim, "sgd_update_whole", counted)
    monkeypatch.setattr(kernels, "_choice", "fast")       # the CPU kernels, whatever the env says
    for chunk in (7, 1 << 30):                        # many pieces (with a partial one), one piece
        pieces.clear()
        monkeypatch.setattr(fast_optim, "CHUNK", chunk)
        rng = np.random.default_rng(1)
        ps = [Parameter(rng.normal(size=s).astype(np.float32)) for s in ((9, 10), (13,))]
        opt = optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=weight_decay, nesterov=nesterov)
        for _ in range(3):
            for p in ps:
                p.grad = rng.normal(size=p.data.shape).astype(np.float32)
            opt.step()
        results.append([p.data.copy() for p in ps] + [b.copy() for b in opt.buffers])
        assert pieces == ([7] * 12 + [6] + [7, 6]) * 3 if chunk == 7 else [90, 13] * 3
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_sgd_updates_a_non_contiguous_parameter_in_place():
    data = np.arange(12.0).reshape(3, 4).T             # a transposed view
    p = Parameter(data)
    p.grad = np.ones_like(data)
    dn.optim.SGD([p], lr=0.5, momentum=0.9).step()
    np.testing.assert_array_equal(data, np.arange(12.0).reshape(3, 4).T - 0.5)


def test_sgd_rejects_a_non_positive_rate():
    with pytest.raises(ValueError, match="lr must be positive"):
        optim.SGD([Parameter(np.ones(2))], lr=0.0)


def test_sgd_state_dict_resumes_the_same_trajectory():
    """Saving the momentum buffers and loading them into a fresh SGD continues exactly."""
    rng = np.random.default_rng(2)
    grads = [rng.normal(size=(4,)) for _ in range(4)]
    a = Parameter(np.ones(4))
    opt = optim.SGD([a], lr=0.1, momentum=0.9)
    for g in grads:
        a.grad = g.copy()
        opt.step()
    b = Parameter(np.ones(4))
    first = optim.SGD([b], lr=0.1, momentum=0.9)
    for g in grads[:2]:
        b.grad = g.copy()
        first.step()
    resumed = optim.SGD([b], lr=0.1, momentum=0.9)
    resumed.load_state_dict(first.state_dict())
    assert resumed.buffers[0] is not first.buffers[0]            # a copy, not the same buffer
    for g in grads[2:]:
        b.grad = g.copy()
        resumed.step()
    np.testing.assert_array_equal(b.data, a.data)
    assert optim.SGD([Parameter(np.ones(2))], lr=0.1).state_dict() == {}   # no momentum, no state


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.Adam(ps, lr=0.01)], ids=["SGD", "Adam"])
def test_each_parameter_is_updated_by_the_kernel_table_of_its_own_array(monkeypatch, make):
    """The table follows each parameter's array (kernels.of(p.data)): a GPU parameter gets the
    GPU update (tests/test_gpu_kernels.py counts its one launch), a NumPy one the CPU's."""
    seen, real = [], kernels.of
    monkeypatch.setattr(kernels, "of", lambda x: seen.append(x) or real(x))
    ps = params(np.random.default_rng(2))
    for p in ps:
        p.grad = np.ones_like(p.data)
    make(ps).step()
    assert len(seen) == len(ps) and all(a is p.data for a, p in zip(seen, ps))


# --- Adam: torch.optim.Adam's update, by hand --------------------------------------------------
#
#   g = grad + wd p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
#   p = p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
#
# eps = 0.1 in the worked numbers below so that the step's size depends on |g| (with a tiny
# eps the first step is lr * sign(g), which hides the weight decay and the moments' scale).

def test_adam_worked_numbers():
    p = Parameter(np.array([1.0, -2.0]))
    opt = optim.Adam([p], lr=0.1, betas=(0.9, 0.99), eps=0.1)
    p.grad = np.array([0.5, 0.0])
    opt.step()
    # t = 1: m = 0.1 g, v = 0.01 g^2; m_hat = g, v_hat = g^2: step 0.1 * 0.5 / (0.5 + 0.1)
    np.testing.assert_allclose(p.data, [1.0 - 0.05 / 0.6, -2.0], rtol=1e-15)
    p.grad = np.array([-0.25, 1.0])
    opt.step()
    # t = 2, first entry: m = 0.9 * 0.05 - 0.025 = 0.02, v = 0.99 * 0.0025 + 0.01 * 0.0625
    #   = 0.003100; m_hat = 0.02 / 0.19, v_hat = 0.0031 / 0.0199
    # second entry: m = 0.1, v = 0.01; m_hat = 0.1 / 0.19, v_hat = 0.01 / 0.0199
    m_hat = np.array([0.02, 0.1]) / 0.19
    v_hat = np.array([0.0031, 0.01]) / 0.0199
    expect = np.array([1.0 - 0.05 / 0.6, -2.0]) - 0.1 * m_hat / (np.sqrt(v_hat) + 0.1)
    np.testing.assert_allclose(p.data, expect, rtol=1e-14)
    assert opt.t == 2


def test_adam_weight_decay_joins_the_gradient():
    """L2 decay (torch.optim.Adam's weight_decay), not AdamW's decoupled decay."""
    p = Parameter(np.array([2.0]))
    opt = optim.Adam([p], lr=0.1, eps=0.1, weight_decay=0.25)
    p.grad = np.array([0.1])
    opt.step()
    g = 0.1 + 0.25 * 2.0                                          # 0.6
    np.testing.assert_allclose(p.data, [2.0 - 0.1 * g / (g + 0.1)], rtol=1e-15)
    np.testing.assert_allclose(opt.m[0], [0.1 * g], rtol=1e-15)  # the moments see the decay
    np.testing.assert_allclose(opt.v[0], [0.001 * g * g], rtol=1e-15)


def step_both(torch, ours, theirs, ps, ts, rng, steps):
    """STEPS steps of our optimiser on PS and torch's on TS, both fed the same random gradients."""
    for _ in range(steps):
        for p, t in zip(ps, ts):
            g = rng.normal(size=p.data.shape)
            p.grad, t.grad = g.copy(), torch.from_numpy(g.copy())
        ours.step()
        theirs.step()


def test_adam_state_dict_resumes_the_same_trajectory():
    rng = np.random.default_rng(3)
    grads = [rng.normal(size=(3, 2)) for _ in range(5)]
    a = Parameter(np.ones((3, 2)))
    opt = optim.Adam([a], lr=0.01, weight_decay=1e-2)
    for g in grads:
        a.grad = g.copy()
        opt.step()
    b = Parameter(np.ones((3, 2)))
    first = optim.Adam([b], lr=0.01, weight_decay=1e-2)
    for g in grads[:3]:
        b.grad = g.copy()
        first.step()
    state = first.state_dict()
    assert state["t"] == 3 and set(state) == {"t", "m.0", "v.0"}
    resumed = optim.Adam([b], lr=0.01, weight_decay=1e-2)
    resumed.load_state_dict(state)
    for g in grads[3:]:
        b.grad = g.copy()
        resumed.step()
    np.testing.assert_array_equal(b.data, a.data)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_adam_against_torch(weight_decay):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    shapes = ((4, 3), (5,))
    ps = [Parameter(rng.normal(size=s)) for s in shapes]
    ts = [torch.tensor(p.data.copy(), requires_grad=True) for p in ps]
    ours = optim.Adam(ps, lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=weight_decay)
    theirs = torch.optim.Adam(ts, lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=weight_decay)
    step_both(torch, ours, theirs, ps, ts, rng, steps=6)
    for p, t in zip(ps, ts):
        # six steps of a few float64 operations each: round-off about 1e-15 relative
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("momentum,weight_decay,nesterov",
                         [(0.0, 0.0, False), (0.9, 1e-4, False), (0.9, 1e-2, True)])
def test_sgd_against_torch(momentum, weight_decay, nesterov):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    ps = [Parameter(rng.normal(size=s)) for s in ((6, 2), (3,))]
    ts = [torch.tensor(p.data.copy(), requires_grad=True) for p in ps]
    kw = dict(lr=0.1, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    ours, theirs = optim.SGD(ps, **kw), torch.optim.SGD(ts, **kw)
    step_both(torch, ours, theirs, ps, ts, rng, steps=5)
    for p, t in zip(ps, ts):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-14)


# --- the cosine schedule ----------------------------------------------------------------------

def test_cosine_lr_of_one_step_goes_from_base_to_min():
    assert optim.cosine_lr(0.1, 0, 1, min_lr=0.01) == 0.1
    assert optim.cosine_lr(0.1, 1, 1, min_lr=0.01) == pytest.approx(0.01, rel=1e-15)
    assert optim.cosine_lr(0.1, 5, 0) == 0.1            # no schedule: the base rate


def test_cosine_lr_worked_numbers():
    # lr(s) = min + (base - min) (1 + cos(pi s / S)) / 2
    assert optim.cosine_lr(0.1, 0, 10) == pytest.approx(0.1, rel=1e-15)
    assert optim.cosine_lr(0.1, 5, 10) == pytest.approx(0.05, rel=1e-15)
    assert optim.cosine_lr(0.1, 10, 10) == pytest.approx(0.0, abs=1e-17)
    # s = S / 3: cos(pi / 3) = 1/2, so the rate is 3/4 of the way from min to base
    assert optim.cosine_lr(0.1, 1, 3, min_lr=0.02) == pytest.approx(0.02 + 0.08 * 0.75, rel=1e-14)
    assert optim.cosine_lr(0.1, 5, 10, min_lr=0.01) == pytest.approx(0.055, rel=1e-14)
    assert optim.cosine_lr(0.1, 15, 10, min_lr=0.01) == pytest.approx(0.01, rel=1e-14)   # held at min
    assert optim.cosine_lr(0.1, 3, 0) == 0.1                                             # no schedule


@pytest.mark.parametrize("total,min_lr", [(7, 0.0), (12, 0.003)])
def test_cosine_lr_against_torch(total, min_lr):
    """CosineAnnealingLR(T_max=total, eta_min=min_lr) stepped once per optimiser step."""
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=min_lr)
    for s in range(total + 1):
        assert optim.cosine_lr(0.2, s, total, min_lr) == pytest.approx(sched.get_last_lr()[0],
                                                                        rel=1e-12, abs=1e-15)
        opt.step()
        sched.step()
