"""tdBN's running statistics and eval mode, against worked numbers and against PyTorch.

PyTorch's conventions (METHOD.md section 6): the batch is normalised with its biased
variance and eps = 1e-5; running_mean <- (1 - m) running_mean + m mean and
running_var <- (1 - m) running_var + m var_unbiased, m = 0.1 on the new value; the running
statistics start at mean 0, variance 1. tdBN folds time into the batch: [T, B, C, ...] has
T * B * prod(...) values per channel.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dsatgo_np as dn
from dsatgo_np.model import BatchNorm

from strategies import FAST, spread_array


def test_running_statistics_worked_numbers():
    bn = BatchNorm(1, dtype="float64")
    # [T=2, B=2, C=1]: mean 4, biased variance (9 + 1 + 1 + 9) / 4 = 5, unbiased 20 / 3
    x1 = np.array([[[1.0], [3.0]], [[5.0], [7.0]]])
    out = bn.forward(x1)
    np.testing.assert_allclose(out[:, :, 0], (np.array([[1, 3], [5, 7]]) - 4) / np.sqrt(5 + 1e-5),
                               rtol=1e-14)
    np.testing.assert_allclose(bn._buffers["running_mean"], [0.4], rtol=1e-14)      # 0.9 * 0 + 0.1 * 4
    np.testing.assert_allclose(bn._buffers["running_var"], [0.9 + 0.1 * 20 / 3], rtol=1e-14)
    # second batch: mean 4, biased variance (4 + 4 + 0 + 16) / 4 = 6, unbiased 8
    bn.forward(np.array([[[2.0], [2.0]], [[4.0], [8.0]]]))
    np.testing.assert_allclose(bn._buffers["running_mean"], [0.9 * 0.4 + 0.4], rtol=1e-14)   # 0.76
    np.testing.assert_allclose(bn._buffers["running_var"], [0.9 * (0.9 + 2 / 3) + 0.8], rtol=1e-14)
    # eval: the running statistics, not the batch's
    bn.eval()
    y = bn.forward(np.array([[[1.76]], [[0.76]]]))
    np.testing.assert_allclose(y[:, 0, 0], np.array([1.0, 0.0]) / np.sqrt(0.9 * (0.9 + 2 / 3) + 0.8 + 1e-5),
                               rtol=1e-14)


def test_momentum_option_and_eps():
    """momentum weighs the new value; eps is added to the biased variance before the root."""
    bn = BatchNorm(2, momentum=0.25, dtype="float64")
    # channel 0: values 0 and 0.01 -> mean 0.005, biased var 2.5e-5, unbiased 5e-5
    # channel 1: values 2 and 6 -> mean 4, biased var 4, unbiased 8
    x = np.array([[[0.0, 2.0], [0.01, 6.0]]])                                  # [T=1, B=2, C=2]
    out = bn.forward(x)
    np.testing.assert_allclose(out[0, :, 0], [-0.005 / np.sqrt(3.5e-5), 0.005 / np.sqrt(3.5e-5)],
                               rtol=1e-12)     # +-0.845: eps matters at this scale
    np.testing.assert_allclose(out[0, :, 1], [-2 / np.sqrt(4 + 1e-5), 2 / np.sqrt(4 + 1e-5)], rtol=1e-14)
    np.testing.assert_allclose(bn._buffers["running_mean"], [0.25 * 0.005, 0.25 * 4], rtol=1e-14)
    np.testing.assert_allclose(bn._buffers["running_var"], [0.75 + 0.25 * 5e-5, 0.75 + 0.25 * 8],
                               rtol=1e-14)


def test_scale_and_shift_apply_in_both_modes():
    bn = BatchNorm(1, scale=2.0, dtype="float64")
    bn._params["bias"].data[...] = 0.5
    x = np.array([[[1.0], [3.0]]])                                             # mean 2, biased var 1
    np.testing.assert_allclose(bn.forward(x)[0, :, 0], 2 * np.array([-1, 1]) / np.sqrt(1 + 1e-5) + 0.5,
                               rtol=1e-14)
    bn.eval()                                  # running mean 0.2, running var 0.9 + 0.1 * 2 = 1.1
    np.testing.assert_allclose(bn.forward(x)[0, :, 0], 2 * (np.array([1, 3]) - 0.2) / np.sqrt(1.1 + 1e-5) + 0.5,
                               rtol=1e-14)


def test_direct_encoded_input_counts_every_step():
    """x[t] = x0 for all T steps (a broadcast view): the statistics are x0's, and the
    unbiased correction uses all T * B values, as the folded copies would."""
    x0 = np.array([[[1.0]], [[3.0]]])[:, 0]                                    # [B=2, C=1]
    xs = dn.encode.direct(x0, 3)                                               # [3, 2, 1], stride 0
    bn = BatchNorm(1, dtype="float64")
    out = bn.forward(xs)
    np.testing.assert_allclose(out[:, :, 0], np.tile([-1, 1], (3, 1)) / np.sqrt(1 + 1e-5), rtol=1e-14)
    # 6 values 1, 3, 1, 3, 1, 3: mean 2, biased var 1, unbiased 6 / 5
    np.testing.assert_allclose(bn._buffers["running_mean"], [0.2], rtol=1e-14)
    np.testing.assert_allclose(bn._buffers["running_var"], [0.9 + 0.1 * 6 / 5], rtol=1e-14)


def _torch_bn(C, ndim, momentum):
    torch = pytest.importorskip("torch")
    cls = {3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm1d, 5: torch.nn.BatchNorm2d}[ndim]
    return torch, cls(C, momentum=momentum, eps=1e-5).double()


@FAST
@given(data=st.data(), T=st.integers(1, 3), B=st.integers(1, 3), C=st.integers(1, 3),
       spatial=st.sampled_from([(), (3,), (2, 3)]), static=st.booleans(),
       momentum=st.sampled_from([0.1, 0.3]))
def test_against_torch_batchnorm(data, T, B, C, spatial, static, momentum):
    """Three training batches and an eval batch through dn.model.BatchNorm ([T, B, C, ...])
    and torch.nn.BatchNorm1d/2d on the folded [T * B, C, ...]: outputs and running stats."""
    if T * B * int(np.prod(spatial, dtype=int)) < 2:
        T = 2                                  # torch refuses one value per channel
    torch, ref = _torch_bn(C, 3 + len(spatial), momentum)
    bn = BatchNorm(C, momentum=momentum, dtype="float64")
    gamma = data.draw(spread_array((C,), 0.5, 2.0, min_std=0.0))
    beta = data.draw(spread_array((C,), -1.0, 1.0, min_std=0.0))
    bn._params["weight"].data[...] = gamma
    bn._params["bias"].data[...] = beta
    with torch.no_grad():
        ref.weight[...] = torch.from_numpy(gamma)
        ref.bias[...] = torch.from_numpy(beta)
    for step in range(4):
        if step == 3:
            bn.eval()
            ref.eval()
        if static:
            x0 = data.draw(spread_array((B, C) + spatial, -3.0, 3.0))
            x = dn.encode.direct(x0, T)
        else:
            x = data.draw(spread_array((T, B, C) + spatial, -3.0, 3.0))
        ours = bn.forward(x)
        theirs = ref(torch.from_numpy(np.array(x).reshape((T * B, C) + spatial)))
        # sums of at most 54 values of size 3: round-off about 54 * 2e-16 * 3
        np.testing.assert_allclose(ours.reshape(theirs.shape), theirs.detach().numpy(),
                                   rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(bn._buffers["running_mean"], ref.running_mean.numpy(),
                                   rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(bn._buffers["running_var"], ref.running_var.numpy(),
                                   rtol=1e-10, atol=1e-13)


def test_eps_option_and_channel_check():
    """eps is the module's own (not the kernel's default), and a wrong channel count is named."""
    bn = BatchNorm(1, eps=0.5, dtype="float64")
    x = np.array([[[1.0], [3.0]]])                                             # biased var 1
    np.testing.assert_allclose(bn.forward(x)[0, :, 0], np.array([-1, 1]) / np.sqrt(1.5), rtol=1e-14)
    with pytest.raises(ValueError, match=r"BatchNorm over 3 channels got input of shape \(2, 4, 5\)"):
        BatchNorm(3).forward(np.ones((2, 4, 5), np.float32))


@pytest.mark.parametrize("kw, name", [(dict(momentum=1.5), "momentum=1.5"), (dict(eps=0.0), "eps=0.0"),
                                      (dict(scale=float("inf")), "scale=inf")])
def test_bad_options_are_named(kw, name):
    with pytest.raises(ValueError, match=rf"^BatchNorm: {name} is out of range"):
        BatchNorm(2, **kw)
